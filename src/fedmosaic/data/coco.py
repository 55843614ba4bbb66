"""MS-COCO 2017 photos and captions as an image+text task (``task.dataset = "coco"``).

Reads the official layout under ``task.data_dir``: ``annotations/captions_{split}.json``,
``annotations/instances_{split}.json`` and ``{split}/*.jpg`` for each split in ``splits``. Each
photo gives ``captions_per_image`` samples (its first captions by annotation id), all in one block
so a photo's captions never straddle parts; captions stay raw strings (the task builder tokenises
them with the model's tokenizer).

Label rule: a photo's class is the supercategory covering the largest area in its instance
annotations -- the areas of its annotations are summed per supercategory (crowd regions included),
the largest sum wins, and a tie goes to the alphabetically first name. The class names are the
supercategories that occur in the kept photos' annotations, sorted (a supercategory that is never
the largest may have no samples). Photos without instance annotations have no label: they are
dropped and counted in ``extras["unlabelled_images"]`` (not bad samples). ``extras["multilabel"]``
is the ``(n, n_classes)`` multi-hot matrix of every supercategory present in each sample's photo.

**Confinement** (``data/paths.py``): a photo's ``file_name`` must resolve (``..`` and symlinks
followed) inside its own split's folder, so a ``train2017`` record cannot pull a ``val2017`` (test)
photo or any file outside the data into training; an escape is a bad sample naming the captions file
and the image id. Annotation files and split folders that resolve out of ``task.data_dir`` stop the
load. Images declaring more than ``max_megapixels`` are bad samples, refused before decoding.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from fedmosaic.core.modality import Modality
from fedmosaic.data.images import DEFAULT_MAX_MEGAPIXELS, PILLOW_MAX_MEGAPIXELS, ImageReadError, read_image
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

DATASET = "coco"


class CocoOptions(BaseModel):
    """Options of the ``coco`` data set (``[task.options]``)."""

    model_config = ConfigDict(extra="forbid")
    image_size: int = Field(
        64, ge=8, le=512, description="square image side in pixels (centre crop + resize)"
    )
    max_tokens: int = Field(32, ge=4, le=512, description="caption length in tokens after tokenisation")
    captions_per_image: int = Field(
        1, ge=1, le=5, description="samples per photo: its first k captions by annotation id"
    )
    splits: list[str] = Field(
        default_factory=lambda: ["train2017", "val2017"],
        min_length=1,
        description="COCO splits to read (folder names; annotations/captions_<split>.json)",
    )
    test_split: str | None = Field(
        "val2017",
        description="split whose samples form the test set (label: the photo's largest-area supercategory)",
    )
    max_megapixels: float = Field(
        DEFAULT_MAX_MEGAPIXELS,
        gt=0,
        le=PILLOW_MAX_MEGAPIXELS,
        description="a photo whose header declares more pixels is a bad sample, refused before decoding",
    )

    @field_validator("splits")
    @classmethod
    def _plain_unique_names(cls, splits: list[str]) -> list[str]:
        for split in splits:
            if not split or "/" in split or "\\" in split or split in (".", ".."):
                raise ValueError(f"split {split!r} must be a plain folder name such as 'train2017'")
        if len(set(splits)) != len(splits):
            raise ValueError("splits lists a split twice")
        return splits

    @model_validator(mode="after")
    def _test_split_is_read(self) -> CocoOptions:
        if self.test_split is not None and self.test_split not in self.splits:
            raise ValueError(f"test_split {self.test_split!r} is not one of splits {self.splits}")
        return self


# The parts of the COCO schema the loader uses; other keys (segmentation, bbox, licences) are ignored.
class _Image(BaseModel):
    id: int
    file_name: str


class _Caption(BaseModel):
    id: int
    image_id: int
    caption: str


class _Instance(BaseModel):
    id: int
    image_id: int
    category_id: int
    area: float = Field(ge=0)


class _Category(BaseModel):
    id: int
    name: str
    supercategory: str


def _modality_names(_: BaseModel) -> tuple[str, ...]:
    return ("image", "text")


def _modalities(options: BaseModel) -> tuple[Modality, ...]:
    assert isinstance(options, CocoOptions)
    size = options.image_size
    return (Modality("image", "image", (3, size, size)), Modality("text", "text", (options.max_tokens,)))


def _read_json(path: Path, root: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """A COCO annotation file (inside ``root``) as a dict holding ``keys``; a one-line ``DataError``
    otherwise."""
    path = confined(path, root)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except RecursionError:  # json's decoder recurses once per nesting level
        raise DataError(f"{path}: JSON nested too deeply to be a COCO annotation file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a COCO annotation file (top level is not a JSON object)")
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(f"{path}: not a COCO annotation file (missing key {missing[0]!r})")
    return data


def _validate(path: Path, key: str, items: object, model: type[BaseModel]) -> list[Any]:
    """``items`` (the file's ``key`` list) checked against ``model``; the first problem as one line."""
    try:
        return TypeAdapter(list[model]).validate_python(items)  # type: ignore[valid-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        where = key + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        raise DataError(f"{path}: not the COCO schema ({where}: {err['msg']})") from exc


def _supercategory_areas(
    path: Path, root: Path, ctx: LoadContext, supercategory: dict[int, str]
) -> dict[int, dict[str, float]]:
    """Instance areas summed per image and supercategory, read from one instances file."""
    data = _read_json(path, root, ("images", "annotations", "categories"))
    for cat in _validate(path, "categories", data["categories"], _Category):
        supercategory[cat.id] = cat.supercategory
    areas: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for ann in _validate(path, "annotations", data["annotations"], _Instance):
        if ann.category_id not in supercategory:
            ctx.bad(
                path,
                f"unknown category_id {ann.category_id} (annotation id {ann.id}, image id {ann.image_id})",
            )
            continue
        areas[ann.image_id][supercategory[ann.category_id]] += ann.area
    return areas


def _label(areas: dict[str, float]) -> str:
    # Largest summed area wins; on a tie the alphabetically first supercategory (deterministic).
    return min(areas, key=lambda name: (-areas[name], name))


def load(options: BaseModel, ctx: LoadContext) -> LoadedData:
    """Read the COCO splits under ``ctx.data_dir`` (see the module doc for the label rule)."""
    assert isinstance(options, CocoOptions)
    root = data_root(ctx, DATASET)
    skipped_before = len(ctx.skipped)
    supercategory: dict[int, str] = {}
    pictures: list[np.ndarray] = []  # one decoded image per kept photo; samples index into it
    picture_of: list[int] = []
    captions: list[str] = []
    image_ids: list[int] = []
    caption_ids: list[int] = []
    split_of: list[str] = []
    present_sets: list[set[str]] = []
    label_names: list[str] = []
    unlabelled = uncaptioned = 0

    for split in options.splits:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"{folder}: image folder of split {split!r} not found")
        folder = confined(folder, root)
        instances = root / "annotations" / f"instances_{split}.json"
        areas = _supercategory_areas(instances, root, ctx, supercategory)
        cap_path = root / "annotations" / f"captions_{split}.json"
        data = _read_json(cap_path, root, ("images", "annotations"))
        images = sorted(_validate(cap_path, "images", data["images"], _Image), key=lambda im: im.id)
        by_image: dict[int, list[_Caption]] = defaultdict(list)
        for cap in _validate(cap_path, "annotations", data["annotations"], _Caption):
            by_image[cap.image_id].append(cap)

        for image in images:
            if not areas.get(image.id):
                unlabelled += 1
                continue
            chosen = sorted(by_image.get(image.id, []), key=lambda c: c.id)[: options.captions_per_image]
            if not chosen:
                uncaptioned += 1
                continue
            good = []
            for cap in chosen:
                if cap.caption.strip():
                    good.append(cap)
                else:
                    ctx.bad(cap_path, f"empty caption (annotation id {cap.id}, image id {image.id})")
            if not good:
                continue
            try:
                photo = confined(folder / image.file_name, folder, "its split folder")
                picture = read_image(photo, options.image_size, 3, options.max_megapixels)
            except PathEscapeError as exc:
                ctx.bad(cap_path, f"image id {image.id}: file_name {image.file_name!r} {exc.reason}")
                continue
            except ImageReadError as exc:
                ctx.bad(exc.path, f"{exc.reason} (image id {image.id})")
                continue
            pictures.append(picture)
            for cap in good:
                picture_of.append(len(pictures) - 1)
                captions.append(cap.caption.strip())
                image_ids.append(image.id)
                caption_ids.append(cap.id)
                split_of.append(split)
                present_sets.append(set(areas[image.id]))
                label_names.append(_label(areas[image.id]))

    if not captions:
        raise DataError(f"{root}: no labelled, captioned photos in splits {options.splits}")
    class_names = tuple(sorted(set().union(*present_sets)))
    column = {name: j for j, name in enumerate(class_names)}
    multilabel = np.zeros((len(captions), len(class_names)), dtype=bool)
    for i, names in enumerate(present_sets):
        multilabel[i, [column[name] for name in names]] = True
    split_arr = np.array(split_of)
    size = options.image_size
    loaded = LoadedData(
        modalities=(
            Modality("image", "image", (3, size, size)),
            Modality("text", "text", (options.max_tokens,), vocab_size=None),
        ),
        store={"image": np.stack(pictures)[np.array(picture_of)]},
        texts={"text": captions},
        labels=np.array([column[name] for name in label_names], dtype=np.int64),
        class_names=class_names,
        extras={
            "image_id": np.array(image_ids, dtype=np.int64),
            "caption_id": np.array(caption_ids, dtype=np.int64),
            "split": split_arr,
            "multilabel": multilabel,
            "unlabelled_images": unlabelled,
            "uncaptioned_images": uncaptioned,
        },
        blocks=np.array(image_ids, dtype=np.int64),
        role=np.where(split_arr == options.test_split, ROLE_TEST, ROLE_FREE).astype(np.int64),
        skipped=list(ctx.skipped[skipped_before:]),
    )
    loaded.check()
    return loaded


register_dataset(
    DatasetEntry(
        DATASET,
        CocoOptions,
        _modality_names,
        load,
        needs_data_dir=True,
        natural_unit="",
        modalities=_modalities,
    )
)
