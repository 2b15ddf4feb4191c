"""Counting a run's records and the end-of-run table (both engines)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from pnpseg.errors import NoImagesError
from pnpseg.io.images import Skipped


@dataclass
class Summary:
    done: int = 0
    skipped_done: int = 0
    failed: int = 0
    not_images: int = 0
    unreadable: int = 0
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
            "unreadable_skipped": self.unreadable,
            "seconds": round(self.seconds, 3),
            "output": output,
            "manifest": manifest,
            "formats": self.formats,
            "errors": [{"input": path, "error": error} for path, error in self.errors],
        }

    @classmethod
    def for_skipped(cls, skipped: Sequence[Skipped]) -> Summary:
        unreadable = sum(s.unreadable for s in skipped)
        return cls(not_images=len(skipped) - unreadable, unreadable=unreadable)

    @property
    def ok(self) -> bool:
        """No image failed and no path that may hold one was unreadable (exit status 0)."""
        return not (self.failed or self.unreadable)

    def add(self, record: Mapping[str, Any]) -> None:
        """Count one manifest record."""
        if record["status"] == "ok":
            self.done += 1
        else:
            self.failed += 1
            self.errors.append((record["input"], record["error"]))


def report_skipped(console: Console, skipped: Sequence[Skipped], inputs: Sequence[object], any_images: bool) -> None:
    """One line per path discovery passed over; inputs without any image are an error (exit 1)."""
    for entry in skipped:
        style = "yellow" if entry.unreadable else "dim"
        console.print(f"[{style}]skipping {entry.path}: {entry.reason}[/]", highlight=False, soft_wrap=True)
    if inputs and not any_images:
        listed = ", ".join(str(p) for p in inputs[:3]) + (", ..." if len(inputs) > 3 else "")
        noted = f" ({len(skipped)} path(s) skipped, listed above)" if skipped else ""
        raise NoImagesError(f"no images found in {listed}{noted}")


def report(console: Console, summary: Summary, title: str, output: str, manifest: str) -> None:
    """The end-of-run table and the first failures."""
    table = Table(title=title, show_header=False)
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    for key, value in (
        ("segmented", summary.done),
        ("already done", summary.skipped_done),
        ("failed", summary.failed),
        ("non-image files skipped", summary.not_images),
        ("unreadable paths skipped", summary.unreadable),
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
