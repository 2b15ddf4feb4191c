"""Counting a run's records and the end-of-run table (both engines)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Summary:
    done: int = 0
    skipped_done: int = 0
    failed: int = 0
    not_images: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: Files written per ``--format`` other than png (rebuilt from every finished image).
    formats: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self, output: str, manifest: str) -> dict[str, Any]:
        """The ``--json`` summary of a run."""
        return {
            "segmented": self.done,
            "already_done": self.skipped_done,
            "failed": self.failed,
            "non_images_skipped": self.not_images,
            "seconds": round(self.seconds, 3),
            "output": output,
            "manifest": manifest,
            "formats": self.formats,
            "errors": [{"input": path, "error": error} for path, error in self.errors],
        }

    def add(self, record: Mapping[str, Any]) -> None:
        """Count one manifest record."""
        if record["status"] == "ok":
            self.done += 1
        else:
            self.failed += 1
            self.errors.append((record["input"], record["error"]))


def say_skipped(console: Console, not_images: Iterable[Any]) -> None:
    for path in not_images:
        console.print(f"[dim]skipping non-image file {path}[/]", highlight=False, soft_wrap=True)


def report(console: Console, summary: Summary, title: str, output: str, manifest: str) -> None:
    """The end-of-run table and the first failures."""
    table = Table(title=title, show_header=False)
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    for key, value in (
        ("segmented", summary.done),
        ("already done", summary.skipped_done),
        ("failed", summary.failed),
        ("non-image files skipped", summary.not_images),
        ("seconds", f"{summary.seconds:.1f}"),
        ("images/s", f"{rate:.2f}"),
        ("output", output),
    ):
        table.add_row(key, str(value))
    console.print(table)
    for path, error in summary.errors[:20]:
        console.print(f"[red]failed[/] {path}: {error}", highlight=False, soft_wrap=True)
    if len(summary.errors) > 20:
        console.print(f"... and {len(summary.errors) - 20} more; see {manifest}")
