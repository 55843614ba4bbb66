"""Write a small, valid data tree for ``task.dataset = "folder"`` from the synthetic image+text task.

    python examples/make_folder_tree.py ROOT [--clients 6]

Clients 1-2 hold images only (their samples file has no ``text`` column), clients 3-4 texts only
(no ``image`` column), the rest both; ``server/test/`` holds both. Even-numbered clients write
``samples.jsonl``, the others ``samples.csv``, so the tree shows both formats. Images are PNGs
beside the samples file. Prints the ``fedmosaic run`` command that trains on the tree.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fedmosaic.data.synthetic import SyntheticOptions, class_names, generate

IMAGE_ONLY, TEXT_ONLY = 2, 2  # the first clients of each kind; the rest hold both


def _columns(k: int) -> tuple[str, ...]:
    if k < IMAGE_ONLY:
        return ("image", "label")
    if k < IMAGE_ONLY + TEXT_ONLY:
        return ("text", "label")
    return ("image", "text", "label")


def write_part(
    folder: Path,
    images: np.ndarray,
    captions: list[str],
    labels: list[str],
    columns: tuple[str, ...],
    jsonl: bool,
) -> None:
    """Write one ``samples.csv`` or ``samples.jsonl`` with ``columns`` (and a PNG per row with an image)."""
    folder.mkdir(parents=True)
    rows = []
    for i, label in enumerate(labels):
        row = {"label": label}
        if "image" in columns:
            name = f"images/{i:05d}.png"
            (folder / "images").mkdir(exist_ok=True)
            Image.fromarray(np.ascontiguousarray(images[i].transpose(1, 2, 0))).save(folder / name)
            row["image"] = name
        if "text" in columns:
            row["text"] = captions[i]
        rows.append({c: row[c] for c in columns})
    if jsonl:
        with (folder / "samples.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    else:
        with (folder / "samples.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def build_tree(root: Path, clients: int, per_client: int, test: int, image_size: int, seed: int) -> None:
    """Generate the synthetic samples and write them as ``clients`` client folders and ``server/test/``."""
    opts = SyntheticOptions(n_samples=clients * per_client + test, image_size=image_size)
    samples = generate(opts, seed)
    names = class_names()
    labels = [names[c] for c in samples.labels]
    for k in range(clients + 1):
        part = (
            slice(k * per_client, (k + 1) * per_client) if k < clients else slice(clients * per_client, None)
        )
        if k < clients:
            folder, columns, jsonl = root / f"client_{k + 1}" / "train", _columns(k), (k + 1) % 2 == 0
        else:
            folder, columns, jsonl = root / "server" / "test", ("image", "text", "label"), False
        write_part(folder, samples.images[part], samples.captions[part], labels[part], columns, jsonl)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to create (must not exist or be empty)")
    parser.add_argument("--clients", type=int, default=6, help="client folders (at least 5; default 6)")
    parser.add_argument("--per-client", type=int, default=60, help="training samples per client")
    parser.add_argument("--test", type=int, default=120, help="samples in server/test/")
    parser.add_argument("--image-size", type=int, default=24, help="PNG side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic task")
    args = parser.parse_args(argv)
    if args.clients < IMAGE_ONLY + TEXT_ONLY + 1:
        parser.error(
            f"--clients must be at least {IMAGE_ONLY + TEXT_ONLY + 1} (2 image-only, 2 text-only, 1 both)"
        )
    if args.per_client < 1 or args.test < 1:
        parser.error("--per-client and --test must be at least 1")
    if args.root.exists() and any(args.root.iterdir()):
        parser.error(f"{args.root} exists and is not empty")
    build_tree(args.root, args.clients, args.per_client, args.test, args.image_size, args.seed)
    print(f"wrote {args.clients} clients and server/test/ under {args.root}")
    print(
        "fedmosaic run --set task.dataset=folder "
        f"--set task.data_dir={shlex.quote(str(args.root))} --set task.partition=natural "
        f"--set 'clients.mix=\"\"' --set task.options.image_size={args.image_size}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
