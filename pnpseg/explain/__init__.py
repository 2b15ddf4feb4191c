"""See what the model sees: per-round maps, every postprocessing stage, the head atlas.

>>> from pnpseg.explain import explain_image                              # doctest: +SKIP
>>> explain_image("cat.jpg", ["cat", "grass"], "out/", adapter="blip", heads=True)  # doctest: +SKIP

The numbers come from :mod:`pnpseg.explain.trace` (no plotting dependency); the figures
from :mod:`pnpseg.explain.figures` (the ``[viz]`` extra). docs/explain.md shows both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pnpseg.explain.trace import HeadAtlas, PipelineTrace, class_contrast, head_atlas, trace_pipeline
from pnpseg.method.defaults import DEFAULT_ADAPTER

__all__ = ["HeadAtlas", "PipelineTrace", "class_contrast", "explain_image", "head_atlas", "trace_pipeline"]


def explain_image(
    image: str | Path,
    classes: Sequence[str],
    out: str | Path,
    *,
    adapter: str | None = None,
    model: str | None = None,
    device: str = "auto",
    params: Mapping[str, Any] | None = None,
    heads: bool = False,
    preset: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``pipeline.png``/``.svg``, with ``heads`` ``atlas-<k>.png`` per class, and
    ``explain.json`` (the numbers shown) to ``out``; returns the paths written. Like every
    output folder, ``out`` is pnpseg's only where pnpseg wrote (:mod:`pnpseg.io.ownership`):
    a file of these names that it did not write, or the image itself, is never replaced."""
    from pnpseg.explain.figures import atlas_figure, pipeline_figure, pyplot, save_figure
    from pnpseg.explain.trace import rewards_from_preset
    from pnpseg.io.folders import check_output_folder
    from pnpseg.io.images import load_image
    from pnpseg.io.outputs import json_bytes
    from pnpseg.io.ownership import Ownership, Planned
    from pnpseg.io.store import Store
    from pnpseg.method.segmenter import Segmenter

    pyplot()  # a missing [viz] extra fails before the model loads
    out = Path(out)
    check_output_folder(out)  # a file or a read-only folder is refused before the model loads
    names = list(classes)
    files = ["pipeline.png", "pipeline.svg", *(f"atlas-{k + 1}.png" for k in range(len(names)) if heads)]
    planned = [Planned(rel, "explain", "explain output") for rel in [*files, "explain.json"]]
    folder = Ownership(Store(out)).load()
    folder.check(planned, [image])  # before the model loads
    picture = load_image(Path(image))
    chosen = {key: value for key, value in dict(params or {}).items() if value is not None}
    segmenter = Segmenter.from_pretrained(model, adapter=adapter or DEFAULT_ADAPTER, device=device, **chosen)
    out.mkdir(parents=True, exist_ok=True)
    folder.claim(planned, [image])
    trace = trace_pipeline(segmenter, picture, names)
    written = save_figure(pipeline_figure(trace, picture), folder, "pipeline.png", "pipeline.svg")
    report: dict[str, Any] = {"image": str(image), "adapter": adapter, "model": model, "pipeline": trace.numbers()}
    if heads:
        atlas = head_atlas(segmenter, picture, names, rewards_from_preset(dict(preset)) if preset else None)
        report["atlas"] = atlas.numbers()
        for k in range(len(names)):
            written += save_figure(atlas_figure(atlas, k), folder, f"atlas-{k + 1}.png")
    folder.write("explain.json", json_bytes(report))
    written.append(out / "explain.json")
    folder.prune(["explain"], keep=[*files, "explain.json"])  # an earlier run's atlas of more classes
    return written
