"""Evaluation datasets: on-disk layouts, class lists, ground-truth decoding, the registry.

Every dataset yields (image, label) file pairs and decodes a label PNG into *train ids*:
``0..N-1`` index ``classes`` (``classes[i]`` is a list of synonyms, the first being the
class's name) and :data:`IGNORE` (255) marks pixels that are not scored. Built-in datasets
(MMSegmentation layouts) are registered through the ``register_datasets`` hook by this very
module, as any plugin would register its own; :func:`folder_dataset` builds the factory for
a generic image-folder + label-folder dataset::

    @pnpseg.hookimpl
    def register_datasets(register):
        register("mine", folder_dataset(img_dir="images", ann_dir="labels",
                                        classes="classes.txt", reduce_zero_label=False))

A factory is called as ``factory(root: Path) -> Dataset``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pnpseg.errors import PnpsegError
from pnpseg.hookspecs import hookimpl
from pnpseg.io.class_lists import DATASET_CLASSES, builtin_classes, read_class_file
from pnpseg.specs import parse_counted, respell

IGNORE = 255


class DatasetError(PnpsegError):
    """A dataset folder, split file, or label file that cannot be used as given (a class list
    that cannot be read is :class:`~pnpseg.io.class_lists.ClassListError`)."""


# -- datasets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One evaluation pair; ``id`` is the image path relative to the image folder, no suffix."""

    id: str
    image: Path
    label: Path


@dataclass
class Dataset:
    """A folder dataset. Paths are relative to ``root`` unless absolute.

    ``reduce_zero_label``: label 0 becomes 255 (ignored) and every other label is reduced by
    1, as MMSegmentation does for ADE20K, VOC20 and PC59. ``has_background``: class 0 is a
    background class that is not prompted (predicted by the protocol's background rule).
    ``pnp_background``: when the ``pnp`` protocol adds a background channel — ``"always"``,
    ``"never"`` or ``"if-fewer-predicted:N"`` (only when fewer than N classes are predicted,
    docs/method.md §4.3; ``"few:N"`` is its deprecated spelling).
    """

    name: str
    root: Path
    img_dir: str
    ann_dir: str
    classes: list[list[str]]
    img_suffix: str = ".jpg"
    seg_suffix: str = ".png"
    split: str | None = None
    reduce_zero_label: bool = False
    has_background: bool = False
    pnp_background: str = "never"
    ignore_index: int = IGNORE
    _samples: list[Sample] | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [synonyms[0] for synonyms in self.classes]

    @property
    def prompt_classes(self) -> list[list[str]]:
        """The classes a model is asked about: all but the background class."""
        return self.classes[1:] if self.has_background else list(self.classes)

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else Path(self.root) / path

    def samples(self) -> list[Sample]:
        """The (image, label) pairs, sorted; raises :class:`DatasetError` naming what is wrong."""
        if self._samples is None:
            self._samples = self._find_samples()
        return self._samples

    def _find_samples(self) -> list[Sample]:
        root = Path(self.root)
        if not root.is_dir():
            raise DatasetError(f"dataset root {root} is not a folder")
        img_dir, ann_dir = self.resolve(self.img_dir), self.resolve(self.ann_dir)
        for what, folder in (("image", img_dir), ("label", ann_dir)):
            if not folder.is_dir():
                raise DatasetError(f"{self.name}: {what} folder {folder} not found")
        if self.split:
            split = self.resolve(self.split)
            try:
                ids = [line.strip() for line in split.read_text(encoding="utf-8").splitlines() if line.strip()]
            except OSError as error:
                raise DatasetError(f"{self.name}: cannot read split file {split}: {error}") from None
            samples = []
            for sample_id in ids:
                image = img_dir / f"{sample_id}{self.img_suffix}"
                label = ann_dir / f"{sample_id}{self.seg_suffix}"
                for what, path in (("image", image), ("label", label)):
                    if not path.is_file():
                        raise DatasetError(f"{self.name}: {what} {path} listed in {split} not found")
                samples.append(Sample(sample_id, image, label))
            if not samples:
                raise DatasetError(f"{self.name}: split file {split} lists no images")
            return samples
        images = _index(img_dir, self.img_suffix)
        labels = _index(ann_dir, self.seg_suffix)
        if not images:
            raise DatasetError(f"{self.name}: no *{self.img_suffix} images in {img_dir}")
        if images.keys() != labels.keys():
            no_label = sorted(images.keys() - labels.keys())
            no_image = sorted(labels.keys() - images.keys())
            problems = []
            if no_label:
                problems.append(f"{len(no_label)} image(s) without a label, e.g. {images[no_label[0]]}")
            if no_image:
                problems.append(f"{len(no_image)} label(s) without an image, e.g. {labels[no_image[0]]}")
            raise DatasetError(
                f"{self.name}: {len(images)} images in {img_dir} but {len(labels)} labels in {ann_dir}; "
                + "; ".join(problems)
            )
        return [Sample(key, images[key], labels[key]) for key in sorted(images)]

    def load_label(self, sample: Sample) -> np.ndarray:
        """The label PNG as (H, W) int64 train ids, 255 = ignore; values are checked."""
        return decode_label(sample.label, self.num_classes, self.reduce_zero_label, self.ignore_index)

    def check_size(self, sample: Sample, label: np.ndarray, image_size: tuple[int, int] | None = None) -> None:
        """Raise if the image's (width, height) differs from the label's."""
        if image_size is None:
            try:
                with Image.open(sample.image) as im:
                    image_size = im.size
            except Exception as error:  # noqa: BLE001 - any decoding problem
                raise DatasetError(f"cannot read image {sample.image}: {error}") from None
        if (label.shape[1], label.shape[0]) != tuple(image_size):
            raise DatasetError(
                f"image {sample.image} is {image_size[0]}x{image_size[1]} but its label {sample.label} "
                f"is {label.shape[1]}x{label.shape[0]}"
            )


def _index(folder: Path, suffix: str) -> dict[str, Path]:
    """``relative/stem`` (suffix removed) → path, for every non-hidden file ending in ``suffix``."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.endswith(suffix):
                continue
            path = Path(dirpath) / name
            found[path.relative_to(folder).as_posix()[: -len(suffix)]] = path
    return found


def decode_label(
    path: Path, num_classes: int, reduce_zero_label: bool = False, ignore_index: int = IGNORE
) -> np.ndarray:
    """Read a palette or grayscale label PNG as train ids (int64), validating every value."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "I;16L", "I;16B", "1"):
                raise DatasetError(
                    f"label {path} has mode {im.mode}: expected a single-channel (palette or grayscale) PNG"
                )
            raw = np.array(im).astype(np.int64)
    except DatasetError:
        raise
    except Exception as error:  # noqa: BLE001
        raise DatasetError(f"cannot read label {path}: {error}") from None
    if reduce_zero_label:
        ignored = (raw == 0) | (raw == ignore_index)
        raw = raw - 1
        raw[ignored] = IGNORE
    elif ignore_index != IGNORE:
        raw[raw == ignore_index] = IGNORE
    bad = (raw >= num_classes) & (raw != IGNORE) | (raw < 0)
    if bad.any():
        values = np.unique(raw[bad] + (1 if reduce_zero_label else 0))
        shown = ", ".join(map(str, values[:10].tolist()))
        raise DatasetError(
            f"label {path} has value(s) {shown} outside the class range 0..{num_classes - 1 + reduce_zero_label}"
            f" (255 = ignore)"
        )
    return raw


# -- registry -------------------------------------------------------------------------------

DatasetFactory = Callable[[Path], Dataset]


def folder_dataset(
    *,
    img_dir: str,
    ann_dir: str,
    classes: str | Path | Sequence[str] | Sequence[Sequence[str]],
    img_suffix: str = ".jpg",
    seg_suffix: str = ".png",
    split: str | None = None,
    reduce_zero_label: bool = False,
    has_background: bool = False,
    pnp_background: str = "never",
    ignore_index: int = IGNORE,
    name: str = "folder",
) -> DatasetFactory:
    """A dataset factory for ``root/img_dir/**/x<img_suffix>`` + ``root/ann_dir/**/x<seg_suffix>``.

    ``classes`` is a class list file path, or a list of names / synonym lists. A relative
    class file path, like ``img_dir`` and ``ann_dir``, is resolved against the dataset root
    (read when the factory is called); an absolute one is read at once. With
    ``reduce_zero_label`` label 0 is ignored and labels 1..N are classes 0..N-1; otherwise 0..N-1
    are the classes directly. ``ignore_index`` is the label value meaning "not scored" (255).
    """
    class_file: Path | None = None
    fixed: list[list[str]] | None = None
    if isinstance(classes, (str, Path)):
        class_file = Path(classes)
        if class_file.is_absolute():
            fixed = read_class_file(class_file)
    else:
        fixed = [[c] if isinstance(c, str) else list(c) for c in classes]
    pnp_background = background_policy(pnp_background)

    def factory(root: Path) -> Dataset:
        class_list = fixed if fixed is not None else read_class_file(Path(root) / str(class_file))
        return Dataset(
            name,
            Path(root),
            img_dir,
            ann_dir,
            [list(c) for c in class_list],
            img_suffix,
            seg_suffix,
            split,
            reduce_zero_label,
            has_background,
            pnp_background,
            ignore_index,
        )

    return factory


#: Old names of the pnp protocol's background rule → new ones: the new name says what it
#: counts (the classes *predicted*; the method's ``if-fewer-prompted:N`` counts those prompted).
RENAMED_POLICY = {"few": "if-fewer-predicted"}


def background_policy(policy: str) -> str:
    """The policy in its current spelling (``few:3`` → ``if-fewer-predicted:3``, with a
    deprecation warning), checked: ``always``, ``never`` or ``if-fewer-predicted:N``."""
    policy = respell(policy, RENAMED_POLICY, "--pnp-background")
    parse_background_policy(policy)
    return policy


def parse_background_policy(policy: str) -> tuple[str, int]:
    """``always`` / ``never`` / ``if-fewer-predicted:N`` → (kind, N)."""
    if policy in ("always", "never"):
        return policy, 0
    counted = parse_counted(policy, {"if-fewer-predicted"})
    if counted is not None:
        return counted
    raise PnpsegError(
        f"background policy must be always, never or if-fewer-predicted:N (formerly few:N), got {policy!r}"
    )


def _builtin(name: str, **layout) -> DatasetFactory:
    """The built-in ``name``: its class list and background from :data:`DATASET_CLASSES`."""
    classes = DATASET_CLASSES[name]

    def factory(root: Path) -> Dataset:
        return folder_dataset(
            name=name, classes=builtin_classes(classes.file), has_background=classes.background, **layout
        )(root)

    factory.__doc__ = f"{name}: {layout}"
    return factory


_VOC = dict(img_dir="JPEGImages", ann_dir="SegmentationClass", split="ImageSets/Segmentation/val.txt")
_PC = dict(img_dir="JPEGImages", ann_dir="SegmentationClassContext", split="ImageSets/SegmentationContext/val.txt")
_COCO = dict(img_dir="images/val2017", ann_dir="annotations/val2017")

BUILTIN: dict[str, DatasetFactory] = {
    "voc21": _builtin("voc21", **_VOC, pnp_background="always"),
    "voc20": _builtin("voc20", **_VOC, reduce_zero_label=True, pnp_background="always"),
    "pc60": _builtin("pc60", **_PC, pnp_background="if-fewer-predicted:3"),
    "pc59": _builtin("pc59", **_PC, reduce_zero_label=True, pnp_background="if-fewer-predicted:3"),
    "coco-object": _builtin("coco-object", **_COCO, seg_suffix="_instanceTrainIds.png", pnp_background="always"),
    "coco-stuff": _builtin(
        "coco-stuff", **_COCO, seg_suffix="_labelTrainIds.png", pnp_background="if-fewer-predicted:3"
    ),
    "ade20k": _builtin(
        "ade20k",
        img_dir="images/validation",
        ann_dir="annotations/validation",
        reduce_zero_label=True,
        pnp_background="if-fewer-predicted:3",
    ),
    "cityscapes": _builtin(
        "cityscapes",
        img_dir="leftImg8bit/val",
        ann_dir="gtFine/val",
        img_suffix="_leftImg8bit.png",
        seg_suffix="_gtFine_labelTrainIds.png",
    ),
}


@hookimpl
def register_datasets(register) -> None:
    for name, factory in BUILTIN.items():
        register(name, factory)


def get_dataset(name: str, root: Path) -> Dataset:
    """Build the registered dataset ``name`` rooted at ``root``."""
    from pnpseg.plugins import lookup

    dataset = lookup("datasets", name)(Path(root))
    if not isinstance(dataset, Dataset):
        raise PnpsegError(f"dataset factory {name!r} returned {type(dataset).__name__}, not a pnpseg Dataset")
    return dataset


# -- conversions ----------------------------------------------------------------------------

COCO_THINGS = 80


def coco_object_from_stuff(label_train_ids: np.ndarray) -> np.ndarray:
    """COCO-Stuff-164k ``*_labelTrainIds`` → COCO-Object ``*_instanceTrainIds`` values.

    Things (train ids 0..79) become 1..80, stuff (80..170) becomes 0 = background, 255 stays.
    """
    src = np.asarray(label_train_ids).astype(np.int64)
    out = np.where(src < COCO_THINGS, src + 1, 0)
    out[src == IGNORE] = IGNORE
    return out.astype(np.uint8)


def convert_coco_object(annotations: Path) -> int:
    """Write ``X_instanceTrainIds.png`` beside every ``X_labelTrainIds.png`` under ``annotations``."""
    from pnpseg.io.outputs import atomic_path

    count = 0
    for path in sorted(Path(annotations).rglob("*_labelTrainIds.png")):
        target = path.with_name(path.name.replace("_labelTrainIds.png", "_instanceTrainIds.png"))
        with Image.open(path) as im:
            out = Image.fromarray(coco_object_from_stuff(np.array(im)))
        with atomic_path(target) as tmp:
            out.save(tmp, format="PNG")
        count += 1
    return count
