"""Per-image class lists in a file: ``pnpseg tune --labels`` and ``--class-source file:``.

One format for both (docs/class-sources.md):

* JSON: ``{"sub/img.jpg": ["cat", "dog"], "img2": ["sky"]}``
* CSV: ``image,classes`` rows with the classes separated by ``;`` (a header row
  ``image,classes`` and ``#`` comment lines are allowed).

An image is found by, most specific first: its path as given on the command line, its path
relative to its input folder (``sub/img.jpg``), either without suffix, its file name, or its
stem; case-insensitively.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from pnpseg.errors import ClassNameError, PnpsegError
from pnpseg.io.images import InputItem
from pnpseg.io.jsontext import parse_json
from pnpseg.method.prompts import validate_names

SEPARATOR = ";"


class ImageClassesError(PnpsegError):
    """A per-image class file that cannot be read, or that does not fit the inputs."""


def item_keys(item: InputItem) -> list[str]:
    """The keys under which a file may list ``item``, most specific first (casefolded)."""
    keys = [
        item.path.as_posix(),
        item.path.with_suffix("").as_posix(),
        item.relative.as_posix(),
        item.relative.with_suffix("").as_posix(),
        item.path.name,
        item.path.stem,
    ]
    return list(dict.fromkeys(key.casefold() for key in keys))


class ImageClasses:
    """A parsed file: ``lookup(item)`` gives the image's class names, or None if unlisted."""

    def __init__(self, path: Path, what: str = "class file", rows: Sequence[tuple[str, list[str]]] | None = None):
        """Parse ``path``, or take its ``rows`` (image key, names) already read in another format."""
        self.path = Path(path)
        self.what = what  # "labels file", "class file": how messages name it
        self.table: dict[str, tuple[str, list[str]]] = {}  # casefolded key → (key as written, names)
        for key, names in _parse(self.path, what) if rows is None else rows:
            folded = key.replace("\\", "/").strip().casefold()
            if folded in self.table:
                raise ImageClassesError(f"{self.what} {self.path} lists image {key!r} twice")
            try:  # an empty list is kept: the image is listed with no classes
                self.table[folded] = (key, validate_names(names) if names else [])
            except ClassNameError as error:
                raise ImageClassesError(f"{self.what} {self.path}, image {key!r}: {error}") from None

    def names(self) -> set[str]:
        return {name for _, names in self.table.values() for name in names}

    def lookup(self, item: InputItem) -> list[str] | None:
        key = self.key_of(item)
        return None if key is None else self.table[key][1]

    def key_of(self, item: InputItem) -> str | None:
        """The table key (casefolded) that lists ``item``, most specific first; None if unlisted."""
        return next((key for key in item_keys(item) if key in self.table), None)

    def check_unambiguous(self, items: Sequence[InputItem]) -> None:
        """Error if one key of the file is what lists two or more of ``items``."""
        by_key: dict[str, list[InputItem]] = {}
        for item in items:
            key = self.key_of(item)
            if key is not None:
                by_key.setdefault(key, []).append(item)
        for key, hits in by_key.items():
            if len(hits) > 1:
                raise _ambiguous(self, self.table[key][0], hits)

    def check_vocabulary(self, vocabulary: Sequence[str]) -> None:
        """Error naming the classes that are not in ``vocabulary`` (compared case-insensitively)."""
        known = {name.casefold() for name in vocabulary}
        unknown = sorted(name for name in self.names() if name.casefold() not in known)
        if unknown:
            raise ClassNameError(
                f"{self.what} {self.path} names classes that are not in --classes: {', '.join(unknown)}"
            )

    def match(self, items: Sequence[InputItem]) -> dict[Path, list[str]]:
        """Every listed image must be one of ``items``, and only one: ``{item.path: names}``."""
        by_key: dict[str, list[InputItem]] = {}
        for item in items:
            for key in item_keys(item):
                by_key.setdefault(key, []).append(item)
        matched: dict[Path, list[str]] = {}
        for folded, (key, names) in self.table.items():
            hits = by_key.get(folded, [])
            if not hits:
                raise ImageClassesError(f"{self.what} {self.path} names image {key!r}, which is not among the inputs")
            if len(hits) > 1:
                raise _ambiguous(self, key, hits)
            if hits[0].path in matched:
                raise ImageClassesError(f"{self.what} {self.path} lists image {str(hits[0].relative)!r} twice")
            matched[hits[0].path] = names
        return matched


def _ambiguous(table: ImageClasses, key: str, hits: Sequence[InputItem]) -> ImageClassesError:
    shown = ", ".join(str(hit.path) for hit in hits[:3])
    return ImageClassesError(
        f"{table.what} {table.path}: {key!r} matches several inputs ({shown}); use the relative path"
    )


def _parse(path: Path, what: str) -> list[tuple[str, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ImageClassesError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ImageClassesError(f"cannot read {what} {path}: {error}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return _parse_json(path, text, what)
    rows: list[tuple[str, list[str]]] = []
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise ImageClassesError(
                f"{what} {path}, line {line}: expected 2 columns (image,classes), got {len(row)}; "
                f"separate classes with {SEPARATOR!r}"
            )
        if not rows and [cell.strip().lower() for cell in row] == ["image", "classes"]:
            continue
        rows.append((row[0].strip(), [name for name in row[1].split(SEPARATOR) if name.strip()]))
    if not rows:
        raise ImageClassesError(f"{what} {path} lists no images")
    return rows


def _parse_json(path: Path, text: str, what: str) -> list[tuple[str, list[str]]]:
    try:
        data = parse_json(text)
    except ValueError as error:
        raise ImageClassesError(f"{what} {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ImageClassesError(f'{what} {path}: expected an object {{"image": ["class", ...]}}')
    for key, value in data.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ImageClassesError(f"{what} {path}: the value for {key!r} must be a list of class names")
    if not data:
        raise ImageClassesError(f"{what} {path} lists no images")
    return [(key, [name for name in value if name.strip()]) for key, value in data.items()]
