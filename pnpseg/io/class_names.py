"""Class names as the user gives them: ``--classes "a,b"`` and ``--classes-file``."""

from __future__ import annotations

from pathlib import Path

from pnpseg.errors import ClassNameError
from pnpseg.io.outputs import check_class_count
from pnpseg.method.prompts import validate_names


def read_class_names(classes: str | None, classes_file: Path | None) -> list[str]:
    """Names from ``--classes "a,b"`` and/or ``--classes-file`` (one per line, # comments)."""
    names: list[str] = []
    if classes is not None:
        if "\n" in classes or "\r" in classes:
            raise ClassNameError("--classes holds a line break; separate class names with commas")
        names += classes.split(",")
    if classes_file is not None:
        try:
            text = classes_file.read_text(encoding="utf-8-sig")  # a BOM is not part of the first name
        except (OSError, UnicodeDecodeError) as error:
            raise ClassNameError(f"cannot read classes file {classes_file}: {error}") from None
        names += [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if classes is None and classes_file is None:
        raise ClassNameError("no class names given: pass --classes 'a,b,c' or --classes-file FILE")
    return checked_names(names)


def checked_names(names: list[str]) -> list[str]:
    """Names as every surface checks them (the CLI, the demo's page): cleaned and validated,
    at most as many as a label PNG holds."""
    names = validate_names(names)
    check_class_count(names)
    return names
