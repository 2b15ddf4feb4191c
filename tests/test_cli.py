"""The command line's contract: exit codes, one-line errors, --version, plugin robustness,
readable output at 80 columns and a light start (issues 11, 12.5/13/15, 13.6/13.8)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import cli

import pnpseg
from pnpseg import plugins


def shell(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``pnpseg ARGS`` in a fresh interpreter (plugin loading happens once per process)."""
    return subprocess.run(
        [sys.executable, "-m", "pnpseg.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def segment(scene: Path, tmp_path: Path, *extra: object):
    return cli("segment", scene, "--adapter", "synthetic", "--out", tmp_path / "out", *extra)


# -- exit codes ---------------------------------------------------------------------------
def test_ok_is_0_and_a_failed_input_is_1(scene, tmp_path):
    assert segment(scene, tmp_path, "--classes", "red,blue", "--postprocess", "none").exit_code == 0
    broken = tmp_path / "in"
    broken.mkdir()
    (broken / "a.png").write_bytes((scene / "a.png").read_bytes())
    (broken / "b.png").write_bytes(b"\x89PNG not really")
    result = cli("segment", broken, "--adapter", "synthetic", "--classes", "red", "--out", tmp_path / "o2")
    assert result.exit_code == 1, result.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--blur-sigma", "nan"], "blur_sigma"),
        (["--blur-sigma", "inf"], "blur_sigma"),
        (["--layer", "0"], "1-based"),
        (["--drop-rule", "top"], "drop rule must be"),
        (["--image-size", "8"], "smaller than one 16-pixel patch"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_values_are_usage_errors_on_one_line(scene, tmp_path, flags, message):
    result = segment(scene, tmp_path, "--classes", "red", *flags)
    assert result.exit_code == 2, result.output
    assert len(error_lines(result.output)) == 1 and message in result.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.png"))


def test_closed_choices_are_checked_by_the_parser(scene, tmp_path):
    result = segment(scene, tmp_path, "--classes", "red", "--compat", "pape")
    assert result.exit_code == 2 and "'pape' is not one of" in result.output


@pytest.mark.parametrize(
    ("params", "message"),
    [({"drop_rule": 5}, "drop_rule"), ({"background": "no"}, "background"), ({"layer": 2.7}, "layer")],
)
def test_bad_preset_is_one_line_exit_2(scene, tmp_path, params, message):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"format": "pnpseg-preset", "version": 1, "params": params}))
    result = segment(scene, tmp_path, "--classes", "red", "--preset", preset)
    assert result.exit_code == 2 and len(error_lines(result.output)) == 1 and message in result.output


def test_missing_dependency_is_environment_3(scene, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"a.png": ["red", "blue"]}))
    result = cli("tune", scene, "--labels", labels, "--adapter", "synthetic", "--out", tmp_path / "p.json")
    assert result.exit_code == 3 and "pip install 'pnpseg[clip]'" in result.output, result.output


def test_unexpected_error_is_one_line_exit_4_with_a_saved_traceback(scene, tmp_path, monkeypatch):
    from pnpseg.io import class_names as local

    def boom(*args, **kwargs):
        raise RuntimeError("something nobody planned for\nsecond line")

    monkeypatch.setattr(local, "read_class_names", boom)
    result = segment(scene, tmp_path, "--classes", "red")
    assert result.exit_code == 4, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and "unexpected RuntimeError: something nobody planned for second line" in lines[0]
    saved = Path(re.search(r"traceback saved to (\S+?);", result.output).group(1))
    try:
        assert "Traceback" in saved.read_text() and "boom" in saved.read_text()
    finally:
        saved.unlink()


def test_version():
    result = cli("--version")
    assert result.exit_code == 0 and re.fullmatch(r"pnpseg \S+\n", result.output)


def test_the_manifest_records_the_image_size_used(scene, tmp_path):
    assert segment(scene, tmp_path, "--classes", "red", "--image-size", "70", "--postprocess", "none").exit_code == 0
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])
    assert record["settings"]["params"]["image_size"] == [64, 64]  # 16-pixel patches: 70 runs at 64


# -- class lists (issue 12.5, 12.15) --------------------------------------------------------
def test_classes_file_with_a_bom(scene, tmp_path):
    names = tmp_path / "names.txt"
    names.write_bytes("\ufeffred\n# a comment\nblue\n".encode())
    assert segment(scene, tmp_path, "--classes-file", names, "--postprocess", "none").exit_code == 0
    table = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert list(table.values()) == ["background", "red", "blue"]


def test_help_says_hash_starts_a_comment():
    assert "comment" in cli("segment", "--help", env={"COLUMNS": "200"}).output


def test_newline_inside_classes_is_refused(scene, tmp_path):
    result = segment(scene, tmp_path, "--classes", "red\nblue")
    assert result.exit_code == 2 and "line break" in result.output


def test_a_huge_class_name_is_cut_in_the_message(scene, tmp_path):
    result = segment(scene, tmp_path, "--classes", "a " * 2500)
    assert result.exit_code == 2 and len(result.output) < 400, result.output


# -- eval (issue 12.13) ---------------------------------------------------------------------
def test_export_classes_to_a_folder_is_one_line(tmp_path):
    result = cli("eval", "--dataset", "voc21", "--root", tmp_path, "--export-classes", tmp_path)
    assert result.exit_code == 2 and "is a folder" in result.output and len(error_lines(result.output)) == 1


@pytest.mark.parametrize("table", [{"300": "red"}, {"one": "red"}, {"-1": "red"}, ["red"]])
def test_eval_refuses_bad_classes_json_keys(tmp_path, table):
    from pnpseg.errors import PnpsegError
    from pnpseg.evaluation.datasets import folder_dataset
    from pnpseg.evaluation.protocols import map_prediction_names

    (tmp_path / "classes.txt").write_text("red\nblue\n")
    data = folder_dataset(img_dir=".", ann_dir=".", classes=tmp_path / "classes.txt")(tmp_path)
    with pytest.raises(PnpsegError, match="label value|must be an object"):
        map_prediction_names(table, data, tmp_path / "classes.json")


# -- plugins (issue 13.6, 13.8; issue 11 --plugins-dir) ------------------------------------
def test_plugins_dir_error_is_escaped(tmp_path):
    missing = tmp_path / "[bold]x[/bold]"
    result = cli("--plugins-dir", missing, "plugins")
    assert result.exit_code == 2 and "[bold]x[/bold]" in result.output


@pytest.mark.slow
def test_broken_plugins_are_skipped_reported_and_listed(tmp_path, scene):
    (tmp_path / "crashes.py").write_text("raise ImportError('no module named nothing_here')\n")
    (tmp_path / "misspelt.py").write_text(
        "import pnpseg\n@pnpseg.hookimpl\ndef register_adapter(register):\n    register('x', object)\n"
    )
    listing = shell("--plugins-dir", tmp_path, "plugins")
    assert listing.returncode == 0, listing.stderr
    warnings = error_lines(listing.stderr)
    assert len(warnings) == 2
    assert "pnpseg_dir_plugin_crashes" in warnings[0] and "no module named nothing_here" in warnings[0]
    assert "pnpseg_dir_plugin_misspelt" in warnings[1] and "register_adapter" in warnings[1]
    assert listing.stdout.count("BROKEN") == 2 and "blip" in listing.stdout
    run = shell(
        "--plugins-dir",
        tmp_path,
        "segment",
        scene,
        "--classes",
        "red",
        "--adapter",
        "synthetic",
        "--out",
        tmp_path / "o",
    )
    assert run.returncode == 0, run.stderr


def test_unknown_distribution_in_pnpseg_load_plugins_is_one_line():
    result = shell("plugins", env={"PNPSEG_LOAD_PLUGINS": "pnpseg-blip,no-such-dist"})
    assert result.returncode == 0
    assert error_lines(result.stderr) == [
        "warning: plugin 'no-such-dist' skipped: PNPSEG_LOAD_PLUGINS names it, but no such distribution is installed"
    ]


def test_in_process_registration_of_a_misspelt_hook_is_one_line():
    class Misspelt:
        @pnpseg.hookimpl
        def register_adapter(self, register):
            register("x", object)

    with pytest.raises(plugins.PluginError, match="unknown hook.*register_adapter"):
        plugins.pm.register(Misspelt(), name="misspelt")
    assert plugins.pm.get_plugin("misspelt") is None


def test_in_process_registration_of_an_installed_plugin():
    import pnpseg_blip.plugin

    plugins.load_plugins()
    assert plugins.pm.register(pnpseg_blip.plugin, name="blip-again") == "blip"  # no pluggy error
    assert "blip" in plugins.adapters()


def test_plugins_listing_is_readable_at_80_columns():
    result = shell("plugins", env={"COLUMNS": "80"})
    assert result.returncode == 0
    assert "…" not in result.stdout and max(map(len, result.stdout.splitlines())) <= 80
    for name in ("bridgetower", "synthetic", "pnpseg-bridgetower", "coco-object"):
        assert name in result.stdout


# -- a light start (issue 11) ---------------------------------------------------------------
@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plugins"], ["segment", "--help"]])
def test_help_version_and_plugins_import_no_torch(args):
    probe = (
        "import sys\nfrom pnpseg.cli import main\nsys.argv = ['pnpseg', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules), file=sys.stderr)\n"
    )
    first_party = {
        "PNPSEG_LOAD_PLUGINS": "pnpseg-blip,pnpseg-bridgetower,pnpseg-flava,pnpseg-vilt"
    }  # not whatever else is installed
    env = {**os.environ, **first_party}
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120, env=env)
    assert "HEAVY []" in result.stderr, result.stderr
