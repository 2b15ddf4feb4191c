import functools
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import pnpseg
from pnpseg import plugins
from pnpseg.cli import app
from pnpseg.errors import UnknownNameError


class InTest:
    @pnpseg.hookimpl
    def register_postprocessors(self, register):
        register("identity", lambda: lambda scores, image, params: scores)


@pytest.fixture
def in_test_plugin():
    plugin = InTest()
    plugins.load_plugins()
    plugins.pm.register(plugin, name="in-test")
    yield plugin
    plugins.pm.unregister(plugin)


def test_builtins_registered_through_hooks():
    assert {"blur", "crf"} <= set(plugins.postprocessors())
    assert "synthetic" in plugins.adapters()


def test_in_process_plugin(in_test_plugin):
    assert "identity" in plugins.postprocessors()
    info = {i.name: i for i in plugins.plugin_info()}["in-test"]
    assert info.provides["postprocessors"] == ["identity"]
    assert set(info.provides) == set(plugins.KINDS) and not any(
        v for k, v in info.provides.items() if k != "postprocessors"
    )


def test_unknown_names_list_available():
    with pytest.raises(UnknownNameError) as error:
        plugins.lookup("adapters", "nope")
    assert "unknown adapter 'nope'; available:" in str(error.value)
    assert "synthetic" in str(error.value)
    with pytest.raises(UnknownNameError, match="unknown postprocessor 'pamr'.*blur, crf"):
        plugins.lookup("postprocessors", "pamr")


def test_plugins_command_lists_everything():
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    provided = {
        name for info in __import__("json").loads(result.stdout) for kind in info["provides"].values() for name in kind
    }
    assert {"blip", "synthetic", "blur", "crf"} <= provided
    packages = {info["package"] for info in __import__("json").loads(result.stdout)}
    assert {"pnpseg", "pnpseg-blip"} <= packages


@pytest.mark.slow
def test_plugins_dir_loads_loose_files(tmp_path):
    (tmp_path / "mine.py").write_text(
        "import pnpseg\n@pnpseg.hookimpl\ndef register_postprocessors(register):\n    register('loose', lambda: None)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pnpseg.cli", "--plugins-dir", str(tmp_path), "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"loose"' in result.stdout


@pytest.mark.slow
def test_load_plugins_env_can_keep_installed_plugins_out():
    code = "from pnpseg import plugins; print(sorted(plugins.adapters()))"
    env = {**__import__("os").environ, "PNPSEG_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "['synthetic']"


def imported_after(code: str, module: str) -> bool:
    """Whether ``module`` is in sys.modules after running ``code`` in a fresh interpreter."""
    env = {**__import__("os").environ, "PNPSEG_LOAD_PLUGINS": ""}
    probe = f"import sys\n{code}\nprint({module!r} in sys.modules)"
    return (
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        == "True"
    )


@pytest.mark.slow
def test_core_never_imports_transformers():
    assert not imported_after(
        "import pkgutil, importlib, pnpseg, pnpseg.cli\n"
        "for m in pkgutil.walk_packages(pnpseg.__path__, 'pnpseg.'): importlib.import_module(m.name)",
        "transformers",
    )


@pytest.mark.slow
def test_core_and_cli_never_import_ray():
    """Ray (the optional ``ray`` extra) is imported only when ``--engine ray`` runs."""
    assert not imported_after(
        "import pnpseg, pnpseg.cli, pnpseg.engines.local, pnpseg.evaluation.evaluate, pnpseg.engines.ray\n"
        "from typer.testing import CliRunner\n"
        "CliRunner().invoke(pnpseg.cli.app, ['segment', '--help'])",
        "ray",
    )
    assert imported_after("import ray", "ray")  # the probe itself can see an import


def test_engine_ray_without_ray_says_which_extra(tmp_path, monkeypatch):
    """A missing optional dependency is an environment problem: exit 3 (the documented exit codes)."""
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    (tmp_path / "x.png").write_bytes(b"")
    result = CliRunner().invoke(
        app,
        [
            "segment",
            str(tmp_path),
            "--classes",
            "red",
            "--adapter",
            "synthetic",
            "--engine",
            "ray",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 3 and "pip install 'pnpseg[ray]'" in result.output, result.output


def test_core_source_has_no_transformers_import():
    import re
    from pathlib import Path

    root = Path(pnpseg.__file__).parent
    offenders = [p for p in root.rglob("*.py") if re.search(r"^\s*(import|from)\s+transformers\b", p.read_text(), re.M)]
    assert offenders == []


@pytest.mark.slow
def test_a_plugin_adds_a_command(tmp_path):
    """``register_commands``: a plugin's command shows in ``--help`` and runs like a built-in."""
    (tmp_path / "hello_plugin.py").write_text(
        "import pnpseg\n\n"
        "@pnpseg.hookimpl\n"
        "def register_commands(cli):\n"
        "    @cli.command()\n"
        "    def hello(name: str = 'world'):\n"
        "        '''Say hello.'''\n"
        "        print(f'hello {name}')\n"
    )
    env = {**os.environ, "PNPSEG_PLUGINS_DIR": str(tmp_path)}
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env)
    listed = run([sys.executable, "-m", "pnpseg.cli", "--help"])
    assert listed.returncode == 0 and "hello" in listed.stdout
    said = run([sys.executable, "-m", "pnpseg.cli", "hello", "--name", "pnpseg"])
    assert said.returncode == 0 and said.stdout.strip() == "hello pnpseg"
