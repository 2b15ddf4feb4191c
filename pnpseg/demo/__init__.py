"""``pnpseg demo``: a local Gradio app to look at what the model sees (the ``[demo]`` extra).

The VLM runs only when the image, the classes, the class source, the layer or the head
change; threshold and blur σ re-render from the cached saliency (steps 1–3 done once, step 4
redone), which takes a fraction of a second. Errors a user can cause (a missing model, a bad
class list) appear in the page as the CLI's one-line message.
"""

from __future__ import annotations

import atexit
import functools
import json
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pnpseg.errors import ImageError, MissingDependencyError, PnpsegError
from pnpseg.method.segmenter import Segmenter

#: Knobs the page owns; everything else comes from the adapter's defaults or a preset.
PAGE_PARAMS = ("layer", "head", "threshold", "blur_sigma")


def gradio() -> Any:
    try:
        import gradio as gr
    except ImportError:
        raise MissingDependencyError("the demo needs Gradio: pip install 'pnpseg[demo]'") from None
    return gr


@dataclass
class Cached:
    """One VLM pass: the image and classes it saw, its saliency, and the knobs it used."""

    image: Image.Image
    classes: list[str]
    saliency: torch.Tensor
    key: tuple


def _one_at_a_time(method: Any) -> Any:
    """Run under the session's lock: Gradio runs events concurrently, a model is not
    thread-safe, and a job still running when Python exits would abort it."""

    @functools.wraps(method)
    def locked(self: DemoSession, *args: Any, **kwargs: Any) -> Any:
        with self.busy:
            return method(self, *args, **kwargs)

    return locked


class DemoSession:
    """The model, loaded on first use, and the page's actions as plain functions (tested
    directly and through the Gradio client)."""

    def __init__(
        self, adapter: str, model: str | None = None, device: str = "auto", params: Mapping[str, Any] | None = None
    ):
        self.adapter_name, self.model, self.device = adapter, model, device
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self._segmenter: Segmenter | None = None
        self.busy = threading.RLock()
        atexit.register(self.wait)

    def wait(self) -> None:
        """Return once no job is running (at exit: let the last one finish)."""
        with self.busy:
            pass

    def segmenter(self, **knobs: Any) -> Segmenter:
        """A segmenter with the page's knobs over the base parameters (the adapter loads once)."""
        if self._segmenter is None:
            self._segmenter = Segmenter.from_pretrained(
                self.model, adapter=self.adapter_name, device=self.device, **self.params
            )
        base = self._segmenter
        return Segmenter(base.adapter, base.params, precision=base.precision, **knobs)

    def page_defaults(self) -> tuple[dict[str, Any], int, int, str | None]:
        """The page's starting knobs, layer and head counts, and the one-line problem if the
        model cannot be loaded (the page still opens and shows it)."""
        from pnpseg.method.params import SegmentParams

        try:
            segmenter = self.segmenter()
        except PnpsegError as error:
            p = SegmentParams.build(self.params)
            return {name: getattr(p, name) for name in PAGE_PARAMS}, max(p.layer, 12), max(p.head, 12), str(error)
        p, adapter = segmenter.params, segmenter.adapter
        return {name: getattr(p, name) for name in PAGE_PARAMS}, adapter.num_layers, adapter.num_heads, None

    @_one_at_a_time
    def saliency(self, image: Image.Image, classes: list[str], source: str, layer: int, head: int) -> Cached:
        """Steps 1–3 for the classes the class source keeps (``all``: every class given)."""
        from pnpseg.sources.class_sources import build_class_source, propose

        segmenter = self.segmenter(layer=int(layer), head=int(head))
        chosen = list(propose(build_class_source(source, classes), image, None, classes, segmenter).classes)
        maps = segmenter.saliency([image], [chosen])[0]
        return Cached(image, chosen, maps, (source, int(layer), int(head)))

    @_one_at_a_time
    def render(self, cached: Cached, threshold: float, blur_sigma: float, layer: int, head: int) -> dict[str, Any]:
        """Step 4 from the cache: labels, overlay, per-class maps, the manifest line."""
        from pnpseg.drawing import render_overlay
        from pnpseg.io.outputs import class_fractions
        from pnpseg.method.labels import minmax

        segmenter = self.segmenter(layer=int(layer), head=int(head), threshold=threshold, blur_sigma=blur_sigma)
        result = segmenter.finish(cached.image, cached.saliency, cached.classes)
        maps = [
            (_colour_map(minmax(result.scores[k + 1 if result.background else k]).numpy()), name)
            for k, name in enumerate(cached.classes)
        ]
        record = {
            "classes": class_fractions(result.labels, cached.classes),
            "class_source": {"name": cached.key[0], "classes": cached.classes},
            "settings": {"adapter": self.adapter_name, "model": self.model, "params": segmenter.params.to_dict()},
        }
        return {
            "labels": result.labels,
            "overlay": render_overlay(cached.image, result.labels, cached.classes),
            "maps": maps,
            "record": record,
        }

    @_one_at_a_time
    def atlas(self, cached: Cached, layer: int, head: int) -> list[tuple[Image.Image, str]]:
        """The head atlas of every class, as images (needs the ``[viz]`` extra)."""
        from pnpseg.explain.figures import atlas_figure, pyplot
        from pnpseg.explain.trace import head_atlas

        atlas = head_atlas(self.segmenter(layer=int(layer), head=int(head)), cached.image, cached.classes)
        images = []
        for k, name in enumerate(cached.classes):
            figure = atlas_figure(atlas, k)
            figure.canvas.draw()
            images.append((Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3]), name))
            pyplot().close(figure)
        return images


def _colour_map(values: np.ndarray) -> Image.Image:
    """A [0, 1] map in viridis, readable for colour-blind users."""
    from pnpseg.explain.figures import MAP_CMAP, pyplot

    rgba = pyplot().get_cmap(MAP_CMAP)(np.clip(values, 0.0, 1.0), bytes=True)
    return Image.fromarray(rgba[..., :3])


def _parse_classes(text: str) -> list[str]:
    """The page's class list, checked as the CLI checks its own, before the model runs."""
    from pnpseg.io.class_names import checked_names

    return checked_names([name for name in text.replace("\n", ",").split(",") if name.strip()])


def build_demo(session: DemoSession, image: Path | None = None, classes: str = "") -> Any:
    """The Gradio Blocks app around ``session``; ``image``/``classes`` prefill the page and
    segment it as soon as it opens."""
    from pnpseg.io.images import load_image

    gr = gradio()
    defaults, num_layers, num_heads, problem = session.page_defaults()
    downloads = Path(tempfile.mkdtemp(prefix="pnpseg-demo-"))

    def fail(error: Exception) -> Exception:
        message = error.reason if isinstance(error, ImageError) else str(error)  # not the upload's temp path
        return gr.Error(message, print_exception=False)

    def outputs(rendered: dict[str, Any], cached: Cached) -> tuple:
        stem = downloads / f"labels-{abs(hash((cached.key, id(cached)))):x}"
        from pnpseg.io.outputs import save_label_png, write_json

        save_label_png(stem.with_suffix(".png"), rendered["labels"])
        line = json.dumps(rendered["record"], ensure_ascii=False)
        write_json(stem.with_suffix(".json"), rendered["record"])
        return (
            rendered["overlay"],
            rendered["maps"],
            [str(stem.with_suffix(".png")), str(stem.with_suffix(".json"))],
            line,
            cached,
        )

    def segment(picture, names, source, layer, head, threshold, blur_sigma, progress=gr.Progress()):
        if picture is None:
            raise gr.Error("upload an image first", print_exception=False)
        try:
            chosen = _parse_classes(names or "")
            image = load_image(Path(picture))  # the pixel limit, EXIF and modes exactly as segment reads files
            progress(0.1, desc="running the model")
            cached = session.saliency(image, chosen, source, layer, head)
            progress(0.8, desc="postprocessing")
            return outputs(session.render(cached, threshold, blur_sigma, layer, head), cached)
        except PnpsegError as error:
            raise fail(error) from None

    def rerender(cached, layer, head, threshold, blur_sigma):
        if cached is None:
            raise gr.Error("segment an image first", print_exception=False)
        try:
            return outputs(session.render(cached, threshold, blur_sigma, layer, head), cached)
        except PnpsegError as error:
            raise fail(error) from None

    def atlas(cached, layer, head):
        if cached is None:
            raise gr.Error("segment an image first", print_exception=False)
        try:
            return session.atlas(cached, layer, head)
        except PnpsegError as error:
            raise fail(error) from None

    with gr.Blocks(title="pnpseg demo") as demo:
        gr.Markdown(
            f"## pnpseg: open-vocabulary segmentation with PnP-OVSS\n"
            f"Adapter `{session.adapter_name}`{f', model `{session.model}`' if session.model else ''}. "
            "Threshold and blur σ re-render instantly from the cached saliency; the class source, "
            "layer and head re-run the model."
        )
        if problem:
            gr.Markdown(f"**error:** {problem}")
        with gr.Row():
            with gr.Column(scale=1):
                # a file path, not a decoded image: the upload is decoded by load_image, under the pixel limit
                picture = gr.Image(type="filepath", image_mode=None, label="image", value=str(image) if image else None)
                names = gr.Textbox(label="classes (comma-separated)", value=classes)
                source = gr.Dropdown(["all", "itm"], value="all", label="class source")
                with gr.Row():
                    layer = gr.Dropdown(list(range(1, num_layers + 1)), value=defaults["layer"], label="layer")
                    head = gr.Dropdown(list(range(1, num_heads + 1)), value=defaults["head"], label="head")
                threshold = gr.Slider(0.0, 1.0, value=defaults["threshold"], step=0.01, label="threshold")
                blur = gr.Slider(0.0, 0.2, value=defaults["blur_sigma"], step=0.005, label="blur σ (× image size)")
                run = gr.Button("Segment", variant="primary")
            with gr.Column(scale=2):
                overlay = gr.Image(label="overlay", type="pil")
                maps = gr.Gallery(label="per-class maps (after postprocessing)", columns=4, height="auto")
                files = gr.File(label="label PNG and manifest record", file_count="multiple")
                record = gr.Textbox(label="manifest record", lines=3)
        with gr.Accordion("head atlas (round-1 GradCAM of every layer and head)", open=False):
            atlas_button = gr.Button("Draw the head atlas")
            atlas_gallery = gr.Gallery(label="head atlas", columns=1, height="auto")
        cached = gr.State(None)
        knobs = [picture, names, source, layer, head, threshold, blur]
        results = [overlay, maps, files, record, cached]
        run.click(segment, knobs, results, api_name="segment")
        for trigger in (source.change, layer.change, head.change):
            trigger(segment, knobs, results, api_name=False)
        for slider, api_name in ((threshold, "rerender"), (blur, False)):
            slider.change(
                rerender, [cached, layer, head, threshold, blur], results, api_name=api_name, trigger_mode="always_last"
            )
        atlas_button.click(atlas, [cached, layer, head], atlas_gallery, api_name="atlas")
        if image is not None and classes:
            demo.load(segment, knobs, results)
    return demo
