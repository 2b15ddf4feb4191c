"""The plugin surface keeps its promises (docs/plugins.md): a broken plugin never takes a
command down, is reported in one line on every command, and using its feature names it;
registries are collected through pluggy's hook callers and cached; ``pnpseg plugins``
says where each plugin comes from and which commands it adds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pnpseg
from pnpseg import plugins
from pnpseg.errors import PluginDefectError, UnknownNameError
from pnpseg.testing import make_scene

LOCAL_ONLY = {"PNPSEG_LOAD_PLUGINS": "pnpseg-blip"}  # one installed plugin, for its command


def pnpseg_cli(*args: object, env: dict[str, str] | None = None, module: str = "pnpseg") -> subprocess.CompletedProcess:
    """``python -m pnpseg ARGS`` in a fresh interpreter (plugins load once per process)."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80", **LOCAL_ONLY, **(env or {})},
        timeout=120,
    )


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scene")
    make_scene(32, 32, ["red", "blue"], seed=0)[0].save(folder / "a.png")
    return folder


def write_plugin(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text("import pnpseg\n\n" + body)
    return folder


RAISING_HOOK = "@pnpseg.hookimpl\ndef register_postprocessors(register):\n    raise RuntimeError('boom')\n"
TAKES_BLUR = "@pnpseg.hookimpl\ndef register_postprocessors(register):\n    register('blur', lambda: None)\n"
LAZY_TYPO = (
    "@pnpseg.hookimpl\ndef register_postprocessors(register):\n"
    "    register('typo', pnpseg.lazy('pnpseg.method.postprocess.blur:GausianBlur'))\n"
)


# -- loading never ends a command -----------------------------------------------------------
def test_python_dash_m_pnpseg_runs_the_cli():
    run = pnpseg_cli("--version")
    assert run.returncode == 0 and run.stdout.strip() == f"pnpseg {pnpseg.__version__}"


def test_a_missing_plugins_dir_variable_is_one_warning_not_a_traceback(tmp_path):
    env = {"PNPSEG_PLUGINS_DIR": str(tmp_path / "gone")}
    version = pnpseg_cli("--version", env=env)
    assert version.returncode == 0 and version.stdout.startswith("pnpseg ")
    listing = pnpseg_cli("plugins", env=env)
    assert listing.returncode == 0
    warnings = lines(listing.stderr)
    assert len(warnings) == 1 and "PNPSEG_PLUGINS_DIR" in warnings[0] and "gone" in warnings[0]
    assert "Traceback" not in listing.stderr


def test_a_missing_plugins_dir_option_is_a_usage_error(tmp_path):
    run = pnpseg_cli("--plugins-dir", tmp_path / "gone", "plugins")
    assert run.returncode == 2
    assert lines(run.stderr) == [f"error: plugins directory '{tmp_path / 'gone'}' is not a folder"]


@pytest.mark.parametrize(
    ("body", "shown"),
    [("import sys\nsys.exit(3)\n", "SystemExit: 3"), ("raise KeyboardInterrupt\n", "KeyboardInterrupt")],
)
def test_a_plugin_exiting_at_import_is_skipped_not_fatal(tmp_path, scene, body, shown):
    folder = write_plugin(tmp_path / "plugins", "quits", body)
    run = pnpseg_cli(
        "--plugins-dir", folder, "segment", scene, "--classes", "red,blue", "--adapter", "synthetic",
        "--out", tmp_path / "out", "--postprocess", "none",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "a.png").is_file()
    warnings = [line for line in lines(run.stderr) if line.startswith("warning:")]
    assert warnings == [
        f"warning: plugin 'pnpseg_dir_plugin_quits' skipped: {folder / 'quits.py'} cannot be imported ({shown})"
    ]


def test_a_plugin_taking_a_builtin_name_is_broken_and_the_builtin_still_works(tmp_path, scene):
    folder = write_plugin(tmp_path / "plugins", "taker", TAKES_BLUR)
    run = pnpseg_cli(
        "--plugins-dir", folder, "segment", scene, "--classes", "red,blue", "--adapter", "synthetic",
        "--out", tmp_path / "out", "--postprocess", "blur",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    reason = "registers postprocessor 'blur', which 'pnpseg.builtins' already provides"
    assert f"warning: plugin 'pnpseg_dir_plugin_taker' skipped: {reason}" in lines(run.stderr)
    listing = json.loads(pnpseg_cli("--plugins-dir", folder, "plugins", "--json").stdout)
    taker = next(info for info in listing if info["name"] == "pnpseg_dir_plugin_taker")
    assert taker["broken"] == reason and taker["provides"]["postprocessors"] == []


def test_a_raising_hook_is_reported_on_every_command_and_named_when_its_feature_is_used(tmp_path, scene):
    folder = write_plugin(tmp_path / "plugins", "raiser", RAISING_HOOK)
    expected = "warning: plugin 'pnpseg_dir_plugin_raiser' skipped: register_postprocessors failed (RuntimeError: boom)"
    for command in (["plugins"], ["eval", "--help"], ["segment", "--help"]):
        run = pnpseg_cli("--plugins-dir", folder, *command)
        assert run.returncode == 0 and lines(run.stderr) == [expected], (command, run.stderr)
    use = pnpseg_cli(
        "--plugins-dir", folder, "segment", scene, "--classes", "red,blue", "--adapter", "synthetic",
        "--out", tmp_path / "out", "--postprocess", "mine",
    )  # fmt: skip
    assert use.returncode == 3, use.stderr
    error = lines(use.stderr)[-1]
    assert error.startswith("error: postprocessor 'mine' is not available: plugin 'pnpseg_dir_plugin_raiser'")
    assert "RuntimeError: boom" in error and "available: blur, crf" in error
    assert not (tmp_path / "out").exists()


def test_a_typo_in_a_lazy_target_is_exit_3_in_one_line(tmp_path, scene):
    folder = write_plugin(tmp_path / "plugins", "typo", LAZY_TYPO)
    run = pnpseg_cli(
        "--plugins-dir", folder, "segment", scene, "--classes", "red,blue", "--adapter", "synthetic",
        "--out", tmp_path / "out", "--postprocess", "typo",
    )  # fmt: skip
    assert run.returncode == 3, run.stderr
    assert lines(run.stderr) == [
        "error: plugin factory 'pnpseg.method.postprocess.blur:GausianBlur' does not exist: "
        "module 'pnpseg.method.postprocess.blur' has no attribute 'GausianBlur'"
    ]


def test_lazy_target_errors_in_process():
    with pytest.raises(PluginDefectError, match="has no attribute 'Nope'"):
        pnpseg.lazy("pnpseg.builtins:Nope").load()
    assert PluginDefectError.exit_code == 3


# -- registries: hook callers, caching, clashes ----------------------------------------------
class Counting:
    calls = 0

    @pnpseg.hookimpl
    def register_postprocessors(self, register):
        Counting.calls += 1
        register("counted", lambda: None)


def test_registries_are_cached_until_a_plugin_is_registered_or_unregistered():
    plugins.load_plugins()
    plugin = Counting()
    Counting.calls = 0
    plugins.pm.register(plugin, name="counting")
    try:
        for _ in range(3):
            assert "counted" in plugins.postprocessors()
            plugins.lookup("postprocessors", "counted")
        assert Counting.calls == 1
        other = Counting()
        plugins.pm.register(other, name="counting-2")  # a new plugin: collected again
        try:
            plugins.postprocessors()
        finally:
            plugins.pm.unregister(other)
        assert Counting.calls >= 3  # both instances' hooks ran on the fresh collection
    finally:
        plugins.pm.unregister(plugin)
        plugins._broken.pop("counting-2", None)
    assert "counted" not in plugins.postprocessors()


def test_a_second_plugin_with_a_taken_name_is_skipped_whole():
    class First:
        @pnpseg.hookimpl
        def register_postprocessors(self, register):
            register("shared-name", lambda: "first")

    class Second:
        @pnpseg.hookimpl
        def register_postprocessors(self, register):
            register("shared-name", lambda: "second")

        @pnpseg.hookimpl
        def register_scorers(self, register):
            register("second-scorer", lambda: None)

    plugins.load_plugins()
    first, second = First(), Second()
    plugins.pm.register(first, name="first")
    plugins.pm.register(second, name="second")
    try:
        assert plugins.lookup("postprocessors", "shared-name")() == "first"
        assert "second-scorer" not in plugins.scorers()  # nothing of a broken plugin is used
        info = {i.name: i for i in plugins.plugin_info()}
        assert info["second"].broken == "registers postprocessor 'shared-name', which 'first' already provides"
        assert info["first"].provides["postprocessors"] == ["shared-name"] and not info["first"].broken
        assert info["first"].package == "in-process"
    finally:
        plugins.pm.unregister(first)
        plugins.pm.unregister(second)
        plugins._broken.pop("second", None)
    with pytest.raises(UnknownNameError):
        plugins.lookup("postprocessors", "shared-name")


# -- pnpseg plugins ------------------------------------------------------------------------
def test_plugins_lists_commands_files_and_wraps_under_its_indent(tmp_path):
    folder = write_plugin(
        tmp_path / "plugins",
        "loose",
        "@pnpseg.hookimpl\ndef register_datasets(register):\n"
        + "".join(f"    register('a-rather-long-dataset-name-{i}', lambda root: None)\n" for i in range(6)),
    )
    run = pnpseg_cli("--plugins-dir", folder, "plugins")
    assert run.returncode == 0, run.stderr
    out = run.stdout.splitlines()
    assert "blip  (pnpseg-blip 0.1.0)" in out and "  commands: convert" in out
    start = next(i for i, line in enumerate(out) if line.startswith("  datasets: a-rather-long-dataset-name-0,"))
    block = out[start : start + 3]
    assert len(block) == 3 and all(line.startswith("    ") for line in block[1:]), block  # hanging indent
    assert all(len(line) <= 80 and line == line.rstrip() for line in out)
    listed = json.loads(pnpseg_cli("--plugins-dir", folder, "plugins", "--json").stdout)
    assert next(i for i in listed if i["name"] == "blip")["commands"] == ["convert"]
    assert next(i for i in listed if i["name"] == "pnpseg_dir_plugin_loose")["package"] == str(folder / "loose.py")
