"""FSDD spoken digits paired with scikit-learn's 8x8 digit images (``task.dataset = "fsdd-digits"``).

The Free Spoken Digit Dataset ships ``recordings/{digit}_{speaker}_{take}.wav`` (8 kHz mono). Each
recording becomes one image+audio sample labelled with its digit: the audio is a log-mel
spectrogram, the image one of the 1,797 bundled ``sklearn.datasets.load_digits`` images of the same
digit (values 0-16 scaled to uint8 0-255).

Pairing never leaks an image from training into test. The images are first split, seeded and
stratified by digit, into a test pool and a training pool; FSDD's documented test recordings
(takes 0-4 of every speaker and digit) are paired only with test-pool images, all other recordings
only with training-pool images. Within a pool, each digit's images are dealt out among the speakers,
so an image is reused only by one speaker's recordings of its digit. ``blocks`` is the image index:
all pairs of one image stay in one part under any split, and since an image belongs to one speaker
a natural (per-speaker) split never has to cut a block.

Every recording must resolve (symlinks followed) inside the recordings folder (``data/paths.py``);
a ``.wav`` that is a symlink out of it is a bad sample, like an unreadable one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fedmosaic.core.modality import Modality
from fedmosaic.core.seeding import numpy_rng
from fedmosaic.data.audio import AudioReadError, MelSettings, wav_to_log_mel
from fedmosaic.data.paths import PathEscapeError, confined, data_root
from fedmosaic.data.registry import (
    ROLE_FREE,
    ROLE_TEST,
    DataError,
    DatasetEntry,
    LoadContext,
    LoadedData,
    register_dataset,
)

DATASET = "fsdd-digits"
SAMPLE_RATE = 8000
OFFICIAL_TEST_TAKES = 5  # FSDD README: "recordings numbered 0-4 (inclusive) are in the test set"
_NAME = re.compile(r"^(\d)_([^_]+)_(\d+)\.wav$", re.IGNORECASE)


class FsddDigitsOptions(BaseModel):
    """Options of the ``fsdd-digits`` data set (``[task.options]``)."""

    model_config = ConfigDict(extra="forbid")
    n_mels: int = Field(32, ge=4, le=128, description="mel bands of the audio spectrogram")
    frames: int = Field(32, ge=4, le=1024, description="spectrogram frames kept (centre crop or pad)")
    hop_length: int = Field(128, ge=16, le=4096, description="STFT hop in samples (8 kHz audio)")
    n_fft: int = Field(512, ge=64, le=8192, description="STFT window length in samples")
    test_split: Literal["official", "none"] = Field(
        "official",
        description="official = FSDD's test set (takes 0-4) is the test set; none = no fixed roles",
    )
    test_image_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.95,
        description="share of the digit images (stratified) reserved for test pairs (official split only)",
    )

    @model_validator(mode="after")
    def _hop_fits_window(self) -> FsddDigitsOptions:
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft})")
        return self


def _modality_names(_: BaseModel) -> tuple[str, ...]:
    return ("image", "audio")


def _modalities(options: BaseModel) -> tuple[Modality, ...]:
    assert isinstance(options, FsddDigitsOptions)
    return (
        Modality("image", "image", (1, 8, 8)),
        Modality("audio", "audio", (1, options.n_mels, options.frames)),
    )


def _recordings_dir(ctx: LoadContext) -> Path:
    root = data_root(ctx, DATASET)
    folder = confined(root / "recordings", root) if (root / "recordings").is_dir() else root
    if not any(p.suffix.lower() == ".wav" for p in folder.iterdir()):
        raise DataError(f"{folder}: no .wav recordings (expected FSDD's recordings/ folder)")
    return folder


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as uint8 ``(1797, 1, 8, 8)`` (0-16 scaled to 0-255) and targets."""
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, digits.target.astype(np.int64)


def _pair_images(
    digit: np.ndarray,
    speaker: np.ndarray,
    in_test: np.ndarray,
    pools: dict[bool, np.ndarray],
    targets: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Image index per recording: from its own pool and digit, from the share dealt to its speaker.

    Recordings must be in take order within each (speaker, digit); the share is cycled through so
    every image of a share is used about equally often.
    """
    out = np.full(len(digit), -1, dtype=np.int64)
    n_speakers = int(speaker.max()) + 1 if len(speaker) else 0
    for test_pool, pool in pools.items():
        for d in range(10):
            pool_d = rng.permutation(pool[targets[pool] == d])
            for s in range(n_speakers):
                members = np.flatnonzero((in_test == test_pool) & (digit == d) & (speaker == s))
                share = pool_d[s::n_speakers]
                if len(share) == 0:  # more speakers than images: share the whole pool (blocks may span)
                    share = pool_d
                out[members] = share[np.arange(len(members)) % len(share)]
    return out


def load(options: BaseModel, ctx: LoadContext) -> LoadedData:
    """Read every FSDD recording under ``ctx.data_dir`` and pair it with a digit image (see module doc)."""
    assert isinstance(options, FsddDigitsOptions)
    folder = _recordings_dir(ctx)
    settings = MelSettings(SAMPLE_RATE, options.n_fft, options.hop_length, options.n_mels, options.frames)
    skipped_before = len(ctx.skipped)

    rows: list[tuple[int, str, int, str]] = []  # (digit, speaker, take, file name)
    spectrograms: list[np.ndarray] = []
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".wav"]
    for path in sorted(files, key=_file_key):
        match = _NAME.match(path.name)
        if match is None:
            ctx.bad(path, "file name does not match {digit}_{speaker}_{take}.wav")
            continue
        try:
            spectrograms.append(wav_to_log_mel(confined(path, folder, "the recordings folder"), settings))
        except PathEscapeError as exc:
            ctx.bad(path, exc.reason)
            continue
        except AudioReadError as exc:
            ctx.bad(exc.path, exc.reason)
            continue
        rows.append((int(match[1]), match[2], int(match[3]), path.name))
    if not rows:
        raise DataError(f"{folder}: no readable recordings")

    speaker_names = tuple(sorted({r[1] for r in rows}))
    digit = np.array([r[0] for r in rows], dtype=np.int64)
    speaker = np.searchsorted(speaker_names, [r[1] for r in rows]).astype(np.int64)
    take = np.array([r[2] for r in rows], dtype=np.int64)
    official = options.test_split == "official"
    in_test = take < OFFICIAL_TEST_TAKES if official else np.zeros(len(rows), dtype=bool)

    images, targets = _digit_images()
    rng = numpy_rng(ctx.seed, 0, DATASET, "image-pools")
    everything = np.arange(len(targets))
    if official:
        train_pool, test_pool = train_test_split(
            everything,
            test_size=options.test_image_fraction,
            stratify=targets,
            random_state=int(rng.integers(2**31 - 1)),
        )
        pools = {False: np.sort(train_pool), True: np.sort(test_pool)}
    else:
        pools = {False: everything}
    image_index = _pair_images(digit, speaker, in_test, pools, targets, rng)

    loaded = LoadedData(
        modalities=(
            Modality("image", "image", (1, 8, 8)),
            Modality("audio", "audio", (1, options.n_mels, options.frames)),
        ),
        store={"image": images[image_index], "audio": np.stack(spectrograms)},
        labels=digit,
        class_names=tuple(str(d) for d in range(10)),
        extras={
            "image_index": image_index,
            "speaker": np.array([speaker_names[s] for s in speaker]),
            "take": take,
            "files": [r[3] for r in rows],
        },
        groups=speaker,
        group_names=speaker_names,
        blocks=image_index.copy(),
        role=np.where(in_test, ROLE_TEST, ROLE_FREE).astype(np.int64),
        skipped=list(ctx.skipped[skipped_before:]),
    )
    loaded.check()
    return loaded


def _file_key(path: Path) -> tuple[object, ...]:
    # Natural order (digit, speaker, take as a number), so takes run 0, 1, ..., 49, not 0, 1, 10, ...
    match = _NAME.match(path.name)
    if match is None:
        return (1, path.name)
    return (0, int(match[1]), match[2], int(match[3]))


register_dataset(
    DatasetEntry(
        DATASET,
        FsddDigitsOptions,
        _modality_names,
        load,
        needs_data_dir=True,
        natural_unit="speaker",
        modalities=_modalities,
    )
)
