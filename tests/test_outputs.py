"""Outputs are written atomically, label PNGs round-trip, the manifest survives crashes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pnpseg.io.outputs import (
    Manifest,
    atomic_path,
    atomic_write_bytes,
    class_fractions,
    is_temp_name,
    palette,
    save_label_png,
    write_json,
)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if is_temp_name(p.name))


# ---------------------------------------------------------------- palette / label PNG


def test_palette_is_voc() -> None:
    pal = palette(256)
    assert len(pal) == 768
    colours = [tuple(pal[i : i + 3]) for i in range(0, 768, 3)]
    assert colours[:4] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert colours[15] == (192, 128, 128)  # VOC "person"
    assert len(set(colours)) == 256
    assert palette(3) == pal[:9]


def test_label_png_round_trip(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [255, 7, 0]], dtype=np.int64)
    save_label_png(tmp_path / "l.png", labels)
    im = Image.open(tmp_path / "l.png")
    assert im.mode == "P" and im.size == (3, 2)
    assert np.array_equal(np.asarray(im), labels)
    assert im.getpalette()[3:6] == [128, 0, 0]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "bad",
    [
        np.array([[0, 256]]),
        np.array([[-1, 0]]),
        np.zeros((2, 2), dtype=np.float32),
        np.zeros((2, 2, 3), dtype=np.uint8),
    ],
)
def test_label_png_rejects_bad_labels(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        save_label_png(tmp_path / "l.png", bad)
    assert not (tmp_path / "l.png").exists() and _leftovers(tmp_path) == []


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_bytes_replaces(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.bin"  # parent created
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert _leftovers(target.parent) == []


def test_atomic_path_failure_keeps_previous_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and is_temp_name(tmp.name) and tmp.name.endswith("out.png")
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


def test_atomic_path_keeps_suffix_for_format_detection(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "x.jpg") as tmp:
        Image.new("RGB", (2, 2)).save(tmp)  # PIL picks JPEG from the suffix
    assert Image.open(tmp_path / "x.jpg").format == "JPEG"


def test_write_json(tmp_path: Path) -> None:
    write_json(tmp_path / "s.json", {"name": "café", "n": np.int64(3), "p": Path("a/b")})
    text = (tmp_path / "s.json").read_text(encoding="utf-8")
    assert "café" in text and "\n  " in text
    assert json.loads(text) == {"name": "café", "n": 3, "p": "a/b"}
    with pytest.raises(ValueError):
        write_json(tmp_path / "s.json", {"x": float("nan")})
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["n"] == 3
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------- manifest


def test_manifest_append_read_latest_wins(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "out" / "manifest.jsonl")
    assert m.records() == {}
    m.append({"input": "a.jpg", "status": "error", "error": "bad"})
    m.append({"input": "b.jpg", "status": "ok"})
    m.append({"input": "a.jpg", "status": "ok", "output": "a.png"})
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    recs = Manifest(tmp_path / "out" / "manifest.jsonl").records()
    assert recs["a.jpg"]["status"] == "ok" and recs["a.jpg"]["output"] == "a.png"
    assert set(recs) == {"a.jpg", "b.jpg"}
    with pytest.raises(ValueError):
        m.append({"status": "ok"})


def test_manifest_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"input": "a.jpg", "status": "ok"}\n{"input": "b.jpg", "sta')
    m = Manifest(path)
    assert set(m.records()) == {"a.jpg"}
    m.append({"input": "c.jpg", "status": "ok"})  # must not be glued onto the broken line
    assert set(Manifest(path).records()) == {"a.jpg", "c.jpg"}


def test_manifest_is_done(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    m = Manifest(tmp_path / "manifest.jsonl")
    assert not m.is_done("a.jpg", out)
    m.append({"input": "a.jpg", "status": "ok", "classes": ["cat", "dog"]})
    assert not m.is_done("a.jpg", out)  # output missing
    out.write_bytes(b"x")
    assert m.is_done("a.jpg", out)
    assert m.is_done("a.jpg", out, require={"classes": ("cat", "dog")})
    assert not m.is_done("a.jpg", out, require={"classes": ["cat"]})
    m.append({"input": "a.jpg", "status": "error"})
    assert not m.is_done("a.jpg", out)
    assert not Manifest(m.path).is_done("a.jpg", out)


# ---------------------------------------------------------------- overlay / fractions


def test_class_fractions() -> None:
    labels = np.array([[0, 1, 1], [2, 2, 2]])
    fr = class_fractions(labels, ["cat", "dog", "unused"])
    assert fr == {"background": 0.1667, "cat": 0.3333, "dog": 0.5}
    assert abs(sum(fr.values()) - 1.0) < 1e-3
    rng = np.random.default_rng(0)
    fr = class_fractions(rng.integers(0, 5, (37, 53)), ["a", "b", "c", "d"])
    assert len(fr) == 5 and abs(sum(fr.values()) - 1.0) < 1e-3
