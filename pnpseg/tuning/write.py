"""The files ``pnpseg tune --out`` writes: the preset and its heat-map beside it, checked
before the search so that a bad path costs nothing and never overwrites an input or a file
pnpseg did not write (the folder's ledger, :mod:`pnpseg.io.ownership`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pnpseg.errors import PnpsegError
from pnpseg.io.folders import check_output_folder
from pnpseg.io.ownership import Ownership, Planned
from pnpseg.io.preset import save_preset
from pnpseg.io.store import Store
from pnpseg.tuning.result import TuneResult, save_heatmap


def heatmap_path(out: Path) -> Path:
    """``<preset stem>-heatmap.png`` beside the preset."""
    out = Path(out)
    return out.parent / f"{out.stem}-heatmap.png"


def planned(out: Path) -> tuple[Ownership, list[Planned]]:
    """The preset's folder and the two files ``tune`` writes there."""
    out = Path(out)
    files = [Planned(out.name, "tune", "preset"), Planned(heatmap_path(out).name, "tune", "heat-map")]
    return Ownership(Store(out.parent)), files


def check_out(out: Path, inputs: Iterable[Path]) -> None:
    """Refuse a preset path that is a folder, not ``.json``, under a file, or that would
    overwrite (with the preset or its heat-map) one of ``inputs`` (exit 2), and a folder
    that cannot be written (exit 3)."""
    out = Path(out)
    if out.is_dir():
        raise PnpsegError(f"--out {out} is a folder: give the preset file to write, e.g. {out / 'preset.json'}")
    if out.suffix.lower() != ".json":
        raise PnpsegError(f"--out {out} must name a .json preset file")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise PnpsegError(f"--out {out}: {parent} is a file, not a folder")
    heat = heatmap_path(out)
    if heat.is_dir():
        raise PnpsegError(f"--out {out}: its heat-map path {heat} is a folder")
    targets = {out.resolve(), heat.resolve()}
    for path in inputs:
        if Path(path).resolve() in targets:
            raise PnpsegError(f"--out {out} would overwrite the input {path}")
    check_output_folder(out.parent)  # a read-only folder found now, not after the search
    folder, files = planned(out)
    folder.load().check(files)  # a preset or heat-map pnpseg did not write is never replaced


def write_outputs(result: TuneResult, out: Path) -> tuple[Path, Path]:
    """Write the preset and the heat-map of ``result`` through the folder's ledger; returns
    their paths."""
    out, heat = Path(out), heatmap_path(out)
    folder, files = planned(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder.load().claim(files)
    with folder.atomic(heat.name) as tmp:
        save_heatmap(
            tmp,
            result.heatmap,
            (result.best_stage1.layer, result.best_stage1.head),
            f"best stage-1 reward per (layer, head), {result.adapter}",
        )
    with folder.atomic(out.name) as tmp:
        write_preset(result, tmp, heat.name)
    return out, heat


def write_preset(result: TuneResult, path: Path, heatmap: str) -> None:
    """The preset of ``result``, naming its heat-map file, its search and log."""
    save_preset(
        path,
        adapter=result.adapter,
        model=result.model,
        params=result.params,
        image_size=list(result.input_size),
        reward={**result.best.reward.to_dict(), "stage1": result.best_stage1.reward.to_dict()},
        scorer=result.scorer,
        search={
            "seed": result.seed,
            "trials": result.trials,
            "images": result.images,
            "vlm_passes": result.vlm_passes,
            "cache_hits": result.cache_hits,
            "scored_images": result.scored_images,
            "space": result.space,
            "seconds": round(result.seconds, 3),
            "margin": result.margin,
            "warnings": result.warnings,
            "heatmap": heatmap,
            "heatmap_grid": [[None if np.isnan(v) else v for v in row] for row in result.heatmap.tolist()],
        },
        log={"stage1": [t.to_dict() for t in result.stage1], "stage2": [t.to_dict() for t in result.stage2]},
    )
