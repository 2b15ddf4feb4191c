"""The evaluation loop behind ``pnpseg eval``: predict (or read predictions), accumulate a
confusion matrix, checkpoint it for resuming, and write the reports.

Prediction value convention (what ``pnpseg segment`` writes and ``--predictions`` reads):
label 0 = background / unlabelled, label i = the i-th *prompted* class, i.e. the dataset's
classes without its background class, in the order of its class list. A ``classes.json``
(``{"0": "background", "1": "aeroplane", ...}``) beside the PNGs overrides that order: each
name is matched (case-insensitively) against the dataset's class names and synonyms.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pnpseg.errors import PnpsegError
from pnpseg.evaluation.datasets import Dataset, DatasetError, Sample, parse_background_policy
from pnpseg.evaluation.metrics import confusion_matrix, scores, top_confusions
from pnpseg.io.images import load_image
from pnpseg.io.outputs import atomic_path, atomic_write_bytes, save_label_png, write_json

PROTOCOLS = ("pnp", "standard")
STATE = "eval_state.npz"


# -- class bookkeeping ----------------------------------------------------------------------


@dataclass
class ClassMap:
    """Prompted classes (with synonyms) ↔ the flat name list a Segmenter is given.

    ``lut[l]`` maps a prediction label ``l`` (0 = background, i = prompted class i) to the
    dataset's class index, or ``N`` (none) where the dataset has no background class.
    """

    dataset: Dataset
    synonyms: bool = True
    flat: list[str] = field(init=False)
    groups: list[list[int]] = field(init=False)
    lut: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.flat, self.groups = [], []
        seen: dict[str, int] = {}
        for names in self.dataset.prompt_classes:
            group = []
            for name in names if self.synonyms else names[:1]:
                key = name.casefold()
                if key not in seen:
                    seen[key] = len(self.flat)
                    self.flat.append(name)
                group.append(seen[key])
            self.groups.append(group)
        n, k = self.dataset.num_classes, len(self.groups)
        if self.dataset.has_background:
            self.lut = np.arange(k + 1, dtype=np.int64)
        else:
            self.lut = np.concatenate([[n], np.arange(k)]).astype(np.int64)

    def fold(self, channels: torch.Tensor) -> torch.Tensor:
        """(len(flat), H, W) scores → (K, H, W): each class's map is the max over its synonyms."""
        return torch.stack([channels[group].amax(0) for group in self.groups])


def map_prediction_names(table: dict[str, str], dataset: Dataset, source: Path) -> np.ndarray:
    """A ``classes.json`` table → lookup array from prediction value to dataset index."""
    index: dict[str, int] = {}
    for i, names in enumerate(dataset.classes):
        for name in names:
            index.setdefault(" ".join(name.split()).casefold(), i)
    n = dataset.num_classes
    lut = np.full(256, -1, dtype=np.int64)
    if not isinstance(table, dict):
        raise DatasetError(f'{source}: must be an object of label value → class name, e.g. {{"0": "background"}}')
    bad = [key for key in table if not (key.isdigit() and int(key) < len(lut))]
    if bad:
        shown = ", ".join(repr(key[:20]) for key in bad[:5])
        raise DatasetError(f"{source}: key(s) {shown} are not label values 0-{len(lut) - 1}")
    unknown = []
    for key, name in table.items():
        value = int(key)
        folded = " ".join(str(name).split()).casefold()
        if folded in index:
            lut[value] = index[folded]
        elif folded in ("background", "unlabelled", "unlabeled", "none") or value == 0:
            lut[value] = 0 if dataset.has_background else n
        else:
            unknown.append(str(name))
    if unknown:
        raise DatasetError(
            f"{source}: class name(s) {', '.join(unknown[:10])} are not classes of {dataset.name} "
            f"(its classes: {', '.join(dataset.class_names[:10])}, ...)"
        )
    return lut


# -- predictors -----------------------------------------------------------------------------


class PredictionFolder:
    """Scores label PNGs already on disk: ``DIR/<sample id>.png``, or ``DIR/<image path relative
    to the image folder, suffix .png>`` as ``pnpseg segment IMG_DIR`` writes (see module doc)."""

    def __init__(self, folder: Path, dataset: Dataset):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"predictions folder {self.folder} not found")
        table_path = self.folder / "classes.json"
        if table_path.exists():
            try:
                table = json.loads(table_path.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError) as error:
                raise DatasetError(f"cannot read {table_path}: {error}") from None
            self.lut = map_prediction_names(table, dataset, table_path)
        else:
            cmap = ClassMap(dataset)
            self.lut = np.full(256, -1, dtype=np.int64)
            self.lut[: len(cmap.lut)] = cmap.lut
        self.dataset = dataset

    def settings(self) -> dict[str, Any]:
        return {"predictions": str(self.folder.resolve())}

    def __call__(self, sample: Sample, label: np.ndarray) -> np.ndarray:
        path = self.folder / f"{sample.id}.png"
        if not path.is_file():  # `pnpseg segment IMG_DIR` keeps the image's full name
            try:
                relative = sample.image.relative_to(self.dataset.resolve(self.dataset.img_dir))
            except ValueError:
                relative = None
            if relative is not None and (self.folder / relative.with_suffix(".png")).is_file():
                path = self.folder / relative.with_suffix(".png")
            else:
                raise DatasetError(f"prediction {path} for {sample.image} not found")
        try:
            with Image.open(path) as im:
                if im.mode not in ("P", "L"):
                    raise DatasetError(f"prediction {path} has mode {im.mode}: expected an 8-bit label PNG")
                raw = np.array(im)
        except DatasetError:
            raise
        except Exception as error:  # noqa: BLE001
            raise DatasetError(f"cannot read prediction {path}: {error}") from None
        if raw.shape != label.shape:
            raise DatasetError(
                f"prediction {path} is {raw.shape[1]}x{raw.shape[0]} but label {sample.label} "
                f"is {label.shape[1]}x{label.shape[0]}"
            )
        pred = self.lut[raw]
        if (pred < 0).any():
            values = np.unique(raw[pred < 0])[:10].tolist()
            raise DatasetError(f"prediction {path} has value(s) {values} with no class (see classes.json)")
        return pred


class ModelPredictor:
    """Runs a Segmenter under one protocol and returns dataset-index label maps."""

    def __init__(
        self,
        segmenter,
        dataset: Dataset,
        protocol: str = "pnp",
        *,
        synonyms: bool | None = None,
        pnp_background: str | None = None,
        bg_threshold: float = 0.0,
        slide: tuple[int, int] | None = None,
        short_side: int | None = None,
    ):
        from pnpseg.method.segmenter import Segmenter

        if protocol not in PROTOCOLS:
            raise PnpsegError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.dataset, self.protocol = dataset, protocol
        self.cmap = ClassMap(dataset, synonyms=(protocol == "standard") if synonyms is None else synonyms)
        self.policy = pnp_background or dataset.pnp_background
        self.kind, self.few = parse_background_policy(self.policy)
        self.bg_threshold, self.slide, self.short_side = bg_threshold, slide, short_side
        if slide is not None and (slide[0] < 1 or slide[1] < 1):
            raise PnpsegError(f"--slide CROP:STRIDE needs positive numbers, got {slide}")
        segmenter.plan(self.cmap.flat)  # tokenizer-level checks before any image
        params = segmenter.params
        self.plain = Segmenter(segmenter.adapter, params, background=False)
        self.with_bg = Segmenter(segmenter.adapter, params, background=True)
        self.segmenter = segmenter

    def settings(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "synonyms": self.cmap.synonyms,
            "params": self.segmenter.params.to_dict(),
            "pnp_background": self.policy if self.protocol == "pnp" else None,
            "bg_threshold": self.bg_threshold if self.protocol == "standard" else None,
            "slide": list(self.slide) if self.slide else None,
            "short_side": self.short_side,
        }

    def __call__(self, sample: Sample, label: np.ndarray) -> np.ndarray:
        image = load_image(sample.image)
        self.dataset.check_size(sample, label, image.size)
        work = image
        if self.short_side:
            scale = self.short_side / min(image.size)
            work = image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR
            )
        labels = self._labels(work)
        if labels.shape != label.shape:
            labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize(image.size, Image.NEAREST))
        return self.cmap.lut[labels.astype(np.int64)]

    def _windows(self, image: Image.Image):
        if self.slide is None:
            yield (0, 0, image.height, image.width)
            return
        crop, stride = self.slide
        h, w = image.height, image.width
        rows = max(h - crop + stride - 1, 0) // stride + 1
        cols = max(w - crop + stride - 1, 0) // stride + 1
        for r in range(rows):
            for c in range(cols):
                y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
                yield (max(y2 - crop, 0), max(x2 - crop, 0), y2, x2)

    def _labels(self, image: Image.Image) -> np.ndarray:
        """(H, W) labels at ``image`` size: 0 = background, i = prompted class i."""
        flat = self.cmap.flat
        if self.protocol == "pnp" and self.slide is None:
            saliency = self.plain.saliency([image], [flat])[0]
            if self.kind == "always":
                return self._pnp_labels(self.with_bg.finish(image, saliency, flat), True, image)
            result = self.plain.finish(image, saliency, flat)
            labels = self._pnp_labels(result, False, image)
            if self.kind == "few" and len(np.unique(labels)) < self.few:
                labels = self._pnp_labels(self.with_bg.finish(image, saliency, flat), True, image)
            return labels
        if self.protocol == "standard":
            return self._window_labels(image, self.dataset.has_background)
        if self.kind == "few":
            labels = self._window_labels(image, False)
            return labels if len(np.unique(labels)) >= self.few else self._window_labels(image, True)
        return self._window_labels(image, self.kind == "always")

    def _window_labels(self, image: Image.Image, background: bool) -> np.ndarray:
        """Per-pixel probabilities (scores normalised over channels), averaged over the windows."""
        flat = self.cmap.flat
        segmenter = self.with_bg if background else self.plain
        channels = len(self.cmap.groups) + background
        total = torch.zeros((channels, image.height, image.width))
        count = torch.zeros((1, image.height, image.width))
        for y1, x1, y2, x2 in self._windows(image):
            result = segmenter(image.crop((x1, y1, x2, y2)), flat)
            raw = result.scores.float().cpu()
            probs = raw / raw.sum(0, keepdim=True).clamp_min(1e-12)
            folded = self.cmap.fold(probs[1:] if background else probs)
            if background:
                folded = torch.cat([probs[:1], folded])
            if folded.shape[-2:] != (y2 - y1, x2 - x1):
                folded = F.interpolate(folded[None], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
            total[:, y1:y2, x1:x2] += folded
            count[:, y1:y2, x1:x2] += 1
        mean = total / count.clamp_min(1)
        labels = mean.argmax(0).numpy() + (0 if background else 1)
        if background and self.protocol == "standard" and self.bg_threshold > 0:
            top = mean[1:].max(0).values.numpy()
            labels[top < self.bg_threshold] = 0
        return labels

    def _pnp_labels(self, result, background: bool, image: Image.Image) -> np.ndarray:
        scores = result.scores.float().cpu()
        folded = self.cmap.fold(scores[1:] if background else scores)
        labels = torch.cat([scores[:1], folded]).argmax(0).numpy() if background else folded.argmax(0).numpy() + 1
        labels = labels.astype(np.uint8 if labels.max() < 256 else np.int32)
        if labels.shape != (image.height, image.width):
            labels = np.asarray(Image.fromarray(labels).resize(image.size, Image.NEAREST))
        return labels


# -- the loop -------------------------------------------------------------------------------


@dataclass
class EvalResult:
    dataset: str
    protocol: str
    rule: str
    images: int
    miou: float
    aacc: float
    per_class: dict[str, float | None]
    confusion: np.ndarray
    seconds: float


class Evaluation:
    """One evaluation run into ``out``; resumable through ``out/eval_state.npz``."""

    def __init__(
        self,
        dataset: Dataset,
        predictor: Callable[[Sample, np.ndarray], np.ndarray],
        out: Path,
        *,
        protocol: str = "pnp",
        settings: dict[str, Any] | None = None,
        limit: int | None = None,
        save_predictions: bool = False,
        checkpoint_every: int = 20,
        overwrite: bool = False,
        console: Console | None = None,
    ):
        if protocol not in PROTOCOLS:
            raise PnpsegError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.dataset, self.predictor, self.out = dataset, predictor, Path(out)
        self.protocol = protocol
        self.rule = "present" if protocol == "pnp" else "union"
        self.limit, self.save_predictions = limit, save_predictions
        self.checkpoint_every = max(1, checkpoint_every)
        self.overwrite = overwrite
        self.console = console or Console(stderr=True)
        self.settings = json.loads(
            json.dumps(
                {
                    "dataset": dataset.name,
                    "root": str(Path(dataset.root).resolve()),
                    "protocol": protocol,
                    **(settings or {}),
                },
                default=str,
            )
        )
        self.samples = dataset.samples()
        if limit is not None:
            self.samples = self.samples[: max(0, limit)]

    # -- state ----------------------------------------------------------------------------
    def _load_state(self) -> tuple[np.ndarray, list[str]]:
        n = self.dataset.num_classes
        path = self.out / STATE
        if self.overwrite or not path.exists():
            return np.zeros((n, n + 1), np.int64), []
        try:
            with np.load(path, allow_pickle=False) as data:
                cm = data["confusion"].astype(np.int64)
                done = [str(x) for x in data["done"]]
                previous = json.loads(str(data["settings"]))
        except Exception as error:  # noqa: BLE001
            raise PnpsegError(f"cannot read the saved evaluation state {path}: {error}; use --overwrite") from None
        if previous != self.settings or cm.shape != (n, n + 1):
            raise PnpsegError(
                f"{self.out} holds an evaluation with other settings ({path}); use --overwrite or another --out"
            )
        return cm, done

    def _save_state(self, cm: np.ndarray, done: list[str]) -> None:
        with atomic_path(self.out / STATE) as tmp:
            np.savez(tmp, confusion=cm, done=np.array(done, dtype=str), settings=json.dumps(self.settings))

    # -- running --------------------------------------------------------------------------
    def run(self) -> EvalResult:
        self.out.mkdir(parents=True, exist_ok=True)
        cm, done = self._load_state()
        finished = set(done)
        todo = [s for s in self.samples if s.id not in finished]
        self.console.print(
            f"Evaluating {self.dataset.name} ({self.dataset.num_classes} classes, protocol {self.protocol}): "
            f"{len(todo)} image(s) to do"
            + (f", {len(self.samples) - len(todo)} already done" if len(todo) < len(self.samples) else ""),
            highlight=False,
            soft_wrap=True,
        )
        if self.save_predictions:
            write_json(self.out / "predictions" / "classes.json", self.prediction_classes())
        start = time.perf_counter()
        since_save = 0
        try:
            with self._progress() as progress:
                task = progress.add_task("eval", total=len(todo), miou=_fmt(scores(cm, self.rule).miou))
                for sample_id, sample_cm in self.confusions(todo):
                    cm += sample_cm
                    done.append(sample_id)
                    since_save += 1
                    if since_save >= self.checkpoint_every:
                        self._save_state(cm, done)
                        since_save = 0
                    progress.update(task, advance=1, miou=_fmt(scores(cm, self.rule).miou))
        finally:
            if since_save:
                self._save_state(cm, done)  # cm and done are always consistent here
        if not (self.out / STATE).exists():
            self._save_state(cm, done)
        return self._finish(cm, len(done), time.perf_counter() - start)

    def confusions(self, todo: list[Sample]) -> Iterator[tuple[str, np.ndarray]]:
        """(sample id, its confusion matrix) for each sample, in order (predicted here; the Ray
        engine overrides this to predict on its workers)."""
        for sample in todo:
            label = self.dataset.load_label(sample)
            pred = self.predictor(sample, label)
            if self.save_predictions:
                self._save_prediction(sample, pred)
            yield sample.id, confusion_matrix(label, pred, self.dataset.num_classes)

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("mIoU {task.fields[miou]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )

    def prediction_classes(self) -> dict[str, str]:
        names = [c[0] for c in self.dataset.prompt_classes]
        return {"0": "background", **{str(i + 1): name for i, name in enumerate(names)}}

    def _save_prediction(self, sample: Sample, pred: np.ndarray) -> None:
        n = self.dataset.num_classes
        if self.dataset.has_background:
            labels = pred
        else:  # dataset index k → k + 1, none → 0 (pnpseg segment's convention)
            labels = np.where(pred == n, 0, pred + 1)
        save_label_png(self.out / "predictions" / f"{sample.id}.png", labels)

    # -- reports --------------------------------------------------------------------------
    def _finish(self, cm: np.ndarray, images: int, seconds: float) -> EvalResult:
        s = scores(cm, self.rule)
        names = self.dataset.class_names
        per_class = {name: (None if not s.evaluated[i] else float(s.iou[i])) for i, name in enumerate(names)}
        result = EvalResult(self.dataset.name, self.protocol, self.rule, images, s.miou, s.aacc, per_class, cm, seconds)
        write_json(
            self.out / "results.json",
            {
                "dataset": self.dataset.name,
                "protocol": self.protocol,
                "averaging": self.rule,
                "images": images,
                "mIoU": _pct(s.miou),
                "aAcc": _pct(s.aacc),
                "settings": self.settings,
                "per_class_iou": {k: _pct(v) for k, v in per_class.items()},
            },
        )
        atomic_write_bytes(self.out / "results.md", self.markdown(result).encode("utf-8"))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["class", "iou", "evaluated", "intersection", "union", "gt_pixels", "pred_pixels"])
        for i, name in enumerate(names):
            iou = "" if math.isnan(s.iou[i]) else f"{100 * s.iou[i]:.4f}"
            writer.writerow(
                [name, iou, int(s.evaluated[i]), s.intersection[i], s.union[i], s.gt_pixels[i], s.pred_pixels[i]]
            )
        atomic_write_bytes(self.out / "per_class_iou.csv", buffer.getvalue().encode("utf-8"))
        with atomic_path(self.out / "confusion.png") as tmp:
            render_confusion(cm, names).save(tmp, format="PNG")
        self.report(result)
        return result

    def markdown(self, result: EvalResult) -> str:
        lines = [
            f"# pnpseg eval: {result.dataset} ({result.protocol} protocol)",
            "",
            "| dataset | protocol | images | mIoU | aAcc |",
            "|---|---|---|---|---|",
            f"| {result.dataset} | {result.protocol} | {result.images} | {_fmt(result.miou)} | {_fmt(result.aacc)} |",
            "",
            "| class | IoU |",
            "|---|---|",
        ]
        lines += [f"| {name} | {_fmt(iou)} |" for name, iou in result.per_class.items()]
        return "\n".join(lines) + "\n"

    def report(self, result: EvalResult) -> None:
        table = Table(title=f"pnpseg eval: {result.dataset} ({result.protocol})")
        table.add_column("class")
        table.add_column("IoU", justify="right")
        for name, iou in result.per_class.items():
            table.add_row(name, _fmt(iou))
        table.add_section()
        table.add_row("[bold]mIoU[/]", f"[bold]{_fmt(result.miou)}[/]")
        table.add_row("aAcc", _fmt(result.aacc))
        table.add_row("images", str(result.images))
        self.console.print(table)
        self.console.print(f"results written to {self.out}", highlight=False, soft_wrap=True)


def _pct(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(100 * value, 4)


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def render_confusion(cm: np.ndarray, names: Sequence[str], pairs: int = 10) -> Image.Image:
    """Row-normalised confusion sub-matrix of the classes in the ``pairs`` most confused pairs."""
    top = top_confusions(cm, pairs)
    n = cm.shape[0]
    labels = list(names) + ["(none)"]
    involved: list[int] = []
    for g, p, _ in top:
        for k in (g, p):
            if k not in involved:
                involved.append(k)
    font = ImageFont.load_default()
    cell, pad = 28, 6
    if not involved:
        im = Image.new("RGB", (360, 40), "white")
        ImageDraw.Draw(im).text((pad, pad), "no confusions", fill="black", font=font)
        return im
    rows = [k for k in involved if k < n]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(probe.textbbox((0, 0), labels[k][:30], font=font)[2] for k in involved) + 2 * pad
    legend = ["top confusions (ground truth -> predicted, % of its pixels):"]
    legend += [f"{labels[g]} -> {labels[p]}: {100 * rate:.1f}%" for g, p, rate in top]
    legend_w = max(probe.textbbox((0, 0), line, font=font)[2] for line in legend) + 2 * pad
    width = max(text_w + cell * len(involved) + pad, legend_w)
    height = text_w + cell * len(rows) + pad + 16 * (len(top) + 2)
    im = Image.new("RGB", (width, max(height, 100)), "white")
    draw = ImageDraw.Draw(im)
    totals = cm.sum(1)
    for c, k in enumerate(involved):  # column labels, written vertically
        tag = Image.new("RGB", (text_w, cell), "white")
        ImageDraw.Draw(tag).text((pad, 8), labels[k][:30], fill="black", font=font)
        im.paste(tag.rotate(90, expand=True), (text_w + c * cell, 0))
    for r, g in enumerate(rows):
        y = text_w + r * cell
        draw.text((pad, y + 8), labels[g][:30], fill="black", font=font)
        for c, p in enumerate(involved):
            rate = cm[g, p] / totals[g] if totals[g] else 0.0
            shade = int(255 * (1 - rate))
            colour = (255, shade, shade) if g != p else (shade, 255, shade)
            x = text_w + c * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(200, 200, 200))
            if rate >= 0.005:
                draw.text((x + 3, y + 8), f"{100 * rate:.0f}", fill="black", font=font)
    y = text_w + len(rows) * cell + 8
    for i, line in enumerate(legend):
        draw.text((pad, y + 16 * i), line, fill="black", font=font)
    return im
