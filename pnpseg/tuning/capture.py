"""Capture and cache: one VLM forward + gradient per image gives the GradCAM class maps of
*all* layers and heads (:func:`pnpseg.method.gradcam.capture`). The maps are kept in memory
and, optionally, on disk (one ``torch.save`` file per image, keyed by adapter, model, image
content, classes and input size), so trials cost postprocessing and scorer calls only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pnpseg.io.image_classes import ImageClasses
from pnpseg.io.images import INPUT_DIGEST, InputItem, load_image
from pnpseg.io.outputs import atomic_path
from pnpseg.method.gradcam import capture, gradcam
from pnpseg.method.prompts import token_weights
from pnpseg.method.resize import fit_longest_side
from pnpseg.method.saliency import Batch
from pnpseg.method.segmenter import Segmenter

#: Masked images are made (and scored) with the longest side at most this many pixels.
SCORE_SIDE = 448
CACHE_VERSION = 1


@dataclass
class LabelledImage:
    """An input image and the classes its labels file lists."""

    item: InputItem
    classes: list[str]


def read_labels(path: Path, items: Sequence[InputItem]) -> tuple[list[LabelledImage], list[InputItem]]:
    """Match a labels file (format: :mod:`pnpseg.io.image_classes`) to the discovered inputs:
    ``(labelled images in input order, unlabelled inputs)``."""
    matched = ImageClasses(Path(path), "labels file").match(items)
    matched = {path: names for path, names in matched.items() if names}  # listed with [] = unlabelled
    labelled = [LabelledImage(item, matched[item.path]) for item in items if item.path in matched]
    return labelled, [item for item in items if item.path not in matched]


@dataclass
class Captured:
    """One image, ready for scoring: per-(layer, head) class maps and the scoring image."""

    labelled: LabelledImage
    maps: torch.Tensor  # (L, H, K, grid_h, grid_w) float32, 0-based layer/head
    rgb: np.ndarray  # (h, w, 3) uint8 at scoring size
    black: torch.Tensor | None = None  # (K,) scorer logits of the black image
    from_cache: bool = False

    @property
    def classes(self) -> list[str]:
        return self.labelled.classes


def all_head_maps(segmenter: Segmenter, image: Image.Image, classes: Sequence[str]) -> torch.Tensor:
    """ONE forward + gradient → GradCAM class maps of every layer and head (L, H, K, gh, gw)."""
    adapter = segmenter.adapter
    plan = segmenter.plan(classes)
    batch = Batch.build([plan], [len(classes)])
    pixels = adapter.preprocess([image], segmenter.input_size)
    text = adapter.tokenize(batch.prompts)
    weights = token_weights(batch.chunks, text.input_ids.shape[1], len(classes), segmenter.params.compat)
    weights = weights.to(pixels.device)
    attentions, gradients, (gh, gw) = capture(
        adapter, pixels[batch.image.to(pixels.device)], text, range(adapter.num_layers)
    )
    per_layer = []
    for attention, gradient in zip(attentions, gradients):
        cam = gradcam(attention, gradient).float()  # (S, heads, T, P)
        per_layer.append(torch.einsum("skt,shtp->hkp", weights.float(), cam))  # chunks summed
    maps = torch.stack(per_layer)  # (L, H, K, P)
    return maps.reshape(*maps.shape[:3], gh, gw).float().cpu()


def scoring_image(image: Image.Image) -> np.ndarray:
    """The RGB array masked images are made from, longest side at most :data:`SCORE_SIDE`."""
    return np.asarray(fit_longest_side(image, SCORE_SIDE).convert("RGB"), dtype=np.uint8)


class Capturer:
    """Captures images (or reads them from the cache folder) and counts VLM passes and hits."""

    def __init__(self, segmenter: Segmenter, adapter_name: str, model: str | None, cache_dir: Path | None) -> None:
        self.segmenter, self.adapter_name, self.model = segmenter, adapter_name, model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.vlm_passes = 0
        self.cache_hits = 0

    def cache_key(self, labelled: LabelledImage, image_sha256: str) -> dict[str, Any]:
        """What a cached capture depends on; ``image_sha256``: the image file's SHA-256
        (``load_image`` computed it from the bytes it decoded)."""
        return {
            "version": CACHE_VERSION,
            "adapter": self.adapter_name,
            "model": self.model,
            "image": image_sha256,
            "classes": list(labelled.classes),
            "size": list(self.segmenter.input_size),
        }

    def cache_path(self, labelled: LabelledImage, key: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        stem = re.sub(r"[^\w.-]+", "_", labelled.item.relative.with_suffix("").as_posix())[:60]
        return self.cache_dir / f"{stem}-{digest}.pt"

    def capture(self, labelled: LabelledImage, before_pass: Callable[[Captured], object] | None = None) -> Captured:
        """The image's maps, from the cache or from one pass; ``before_pass`` sees the image first
        (the tuner asks the scorer about its classes there, before any VLM cost)."""
        image = load_image(labelled.item.path)
        captured = Captured(labelled, torch.empty(0), scoring_image(image))
        if before_pass is not None:
            before_pass(captured)
        key = self.cache_key(labelled, image.info[INPUT_DIGEST])
        path = self.cache_path(labelled, key)
        maps = None
        if path is not None and path.exists():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                if stored.get("key") == json.loads(json.dumps(key)):
                    maps = stored["maps"].float()
            except Exception:  # a corrupt or foreign file: recompute
                maps = None
        hit = maps is not None
        if maps is None:
            maps = all_head_maps(self.segmenter, image, labelled.classes)
            self.vlm_passes += 1
            if path is not None:
                with atomic_path(path) as tmp:
                    torch.save({"key": key, "maps": maps}, tmp)
        self.cache_hits += hit
        captured.maps, captured.from_cache = maps, hit
        return captured
