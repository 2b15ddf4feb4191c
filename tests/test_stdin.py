"""``pnpseg segment -``: paths on stdin, as ``find`` prints them (one per line, or NUL-separated
with ``-0``), keep their folders in the output names, relative to ``--root`` (default: the
current folder), and keep every character of their names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.testing import make_scene

CLASSES = "red,blue"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """``photos/`` with two ``img.png`` in different folders and names with odd spaces; cwd = tmp_path."""
    names = ["photos/x/img.png", "photos/y/img.png", "photos/sub c.png", "photos/ lead.png", "photos/trail .png"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        make_scene(32, 32, ["red", "blue"], seed=0)[0].save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return names


def segment(stdin: str | bytes, *args: str):
    return CliRunner().invoke(
        app,
        ["segment", "-", "--classes", CLASSES, "--adapter", "synthetic", "--device", "cpu", "--json", *args],
        input=stdin,
    )


def outputs(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*.png")}


def test_stdin_paths_keep_their_folders_relative_to_the_current_folder(tree, tmp_path):
    result = segment("".join(f"{name}\n" for name in tree), "--out", "masks")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["segmented"] == len(tree)
    assert outputs(tmp_path / "masks") == set(tree)  # photos/x/img.png and photos/y/img.png: no clash


def test_root_names_outputs_relative_to_it(tree, tmp_path):
    absolute = "".join(f"{tmp_path / name}\n" for name in tree[:2])  # find /abs/photos prints absolute paths
    result = segment(absolute, "--out", "masks", "--root", "photos")
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "masks") == {"x/img.png", "y/img.png"}
    records = [json.loads(line) for line in (tmp_path / "masks" / "manifest.jsonl").read_text().splitlines()]
    assert {r["output"] for r in records} == {"masks/x/img.png", "masks/y/img.png"}


def test_folders_on_stdin_are_named_from_the_root_too(tree, tmp_path):
    """``find photos`` also prints the folders: each image is segmented once, under one name."""
    result = segment("photos\nphotos/x\nphotos/x/img.png\n", "--out", "masks")
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "masks") == set(tree)


def test_a_path_outside_the_root_is_refused_before_the_model_loads(tree, tmp_path):
    result = segment("photos/x/img.png\n", "--out", "masks", "--root", "photos/y")
    assert result.exit_code == 2
    assert "not inside --root" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "masks").exists()
    result = segment("photos/x/img.png\n", "--out", "masks", "--root", "photos/x/img.png")
    assert result.exit_code == 2 and "--root" in result.stderr


def test_stdin_lines_keep_leading_and_trailing_spaces(tree, tmp_path):
    result = segment("photos/ lead.png\nphotos/trail .png\n", "--out", "masks")
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "masks") == {"photos/ lead.png", "photos/trail .png"}


def test_null_separated_input_as_find_print0(tree, tmp_path):
    (tmp_path / "photos" / "new\nline.png").write_bytes((tmp_path / tree[0]).read_bytes())
    names = [*tree, "photos/new\nline.png"]
    for flag in ("-0", "--null"):
        out = f"masks{flag}"
        result = segment("\0".join(names).encode() + b"\0", "--out", out, flag)
        assert result.exit_code == 0, result.output
        assert outputs(tmp_path / out) == set(names)


def test_nul_characters_without_null_are_refused_not_echoed(tree, tmp_path):
    result = segment("\0".join(tree).encode() + b"\0", "--out", "masks")
    assert result.exit_code == 2
    assert "\0" not in result.output and "-0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_ray_engine_names_local_inputs_from_the_root_too(tree, tmp_path):
    pytest.importorskip("pyarrow")
    from pnpseg.engines.ray.storage import discover_uris

    found, _ = discover_uris([tmp_path / tree[0], "photos/y"], names_root=tmp_path)
    assert [item.relative.as_posix() for item, _ in found] == ["photos/x/img.png", "photos/y/img.png"]


def test_root_works_for_inputs_given_as_arguments(tree, tmp_path):
    """Two ``img.png`` named as files clash without ``--root`` and keep apart with it."""
    args = ["segment", *tree[:2], "--classes", CLASSES, "--adapter", "synthetic", "--device", "cpu"]
    clash = CliRunner().invoke(app, [*args, "--out", "clash"])
    assert clash.exit_code == 2 and "clash" in clash.stderr
    result = CliRunner().invoke(app, [*args, "--out", "masks", "--root", "photos"])
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "masks") == {"x/img.png", "y/img.png"}
