"""docs/formats.md's ``--json`` field tables are the fields the commands really print: each
command is run with ``--json`` and its top-level keys are compared with its table row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.testing import make_scene

DOC = Path(__file__).resolve().parents[1] / "docs" / "formats.md"
ALWAYS = {"exit_code", "error"}  # "Every object also has ..."


def _top_level(text: str) -> str:
    """``text`` without what brackets of any kind hold (the sub-fields)."""
    depth, kept = 0, []
    for char in text:
        depth += char in "([{"
        if depth == 0:
            kept.append(char)
        depth -= char in ")]}"
    return "".join(kept)


def documented() -> dict[str, set[str]]:
    """``{command: {field, ...}}`` from the table under "``--json`` summaries"; a list row
    (``plugins``) gives the fields of its items."""
    section = DOC.read_text().split("## `--json` summaries", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        command, fields = cells[0].strip("`"), cells[1]
        if fields.startswith("a list of"):
            item = re.search(r"`\{(.*)\}`", fields).group(1)
            rows[command] = {name.split(":")[0].strip() for name in _top_level(item).split(",")}
        else:
            rows[command] = set(re.findall(r"`([A-Za-z_]+)`", _top_level(fields)))
    return rows


def cli(*args: object) -> dict | list:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    for seed in range(2):
        make_scene(64, 64, ["red", "blue"], seed=seed)[0].save(folder / f"{seed}.png")
    return folder


def printed(command: str, scene: Path, tmp: Path) -> dict | list:
    """What ``pnpseg <command> --json`` prints on a small, successful run."""
    synthetic = ["--adapter", "synthetic", "--device", "cpu"]
    if command == "segment":
        return cli("segment", scene, "--classes", "red,blue", *synthetic, "--out", tmp / "seg", "--json")
    if command == "eval":
        from test_eval import voc_with_known_predictions

        voc_with_known_predictions(tmp / "voc", tmp / "preds")
        return cli("eval", "--dataset", "voc20", "--root", tmp / "voc", "--predictions", tmp / "preds", "--json")
    if command == "tune":
        labels = tmp / "labels.json"
        labels.write_text(json.dumps({"0.png": ["red", "blue"], "1.png": ["red", "blue"]}))
        fast = ["--scorer", "synthetic", "--trials", "4", "--image-size", "64"]
        return cli("tune", scene, "--labels", labels, *synthetic, *fast, "--out", tmp / "p.json", "--json")
    if command == "explain":
        return cli("explain", scene / "0.png", "--classes", "red,blue", *synthetic, "--out", tmp / "x", "--json")
    if command == "convert blip":
        from tiny_models import write_tiny_lavis_blip_checkpoint

        return cli("convert", "blip", write_tiny_lavis_blip_checkpoint(tmp), tmp / "hf", "--json")
    if command == "plugins":
        return cli("plugins", "--json")
    raise AssertionError(f"docs/formats.md documents a command this test does not run: {command}")


def test_the_table_covers_every_command_with_json():
    assert set(documented()) == {"segment", "eval", "tune", "explain", "convert blip", "plugins"}


@pytest.mark.parametrize("command", sorted(documented()))
def test_documented_fields_are_the_printed_fields(command, scene, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # eval without --out writes next to the working folder
    fields = documented()[command]
    summary = printed(command, scene, tmp_path)
    if isinstance(summary, list):  # plugins: a list of objects
        assert summary and all(set(entry) == fields for entry in summary), summary
    else:
        assert set(summary) == fields | ALWAYS, summary


def test_an_error_document_has_the_documented_fields(tmp_path):
    result = CliRunner().invoke(app, ["segment", str(tmp_path / "none"), "--classes", "a", "--json"])
    assert result.exit_code == 2
    assert set(json.loads(result.stdout)) == {"command", "exit_code", "error"}


def test_the_exit_code_tables_list_every_code_and_kind():
    """The README's exit-code table and the error kinds in docs/formats.md are the code's (130 included)."""
    from pnpseg.cli.app import EXIT_KINDS

    readme = (DOC.parents[1] / "README.md").read_text().split("### Exit codes", 1)[1].split("\n#", 1)[0]
    assert {int(code) for code in re.findall(r"^\| (\d+) \|", readme, re.M)} == set(EXIT_KINDS)
    kinds = re.search(r'`\{"kind": (.*?), "message"', DOC.read_text(), re.S).group(1)
    assert set(re.findall(r'"([a-z ]+)"', kinds)) == {kind for kind, _ in EXIT_KINDS.values()} - {"ok"}
