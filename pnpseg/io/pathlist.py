"""Lists of input paths as ``find`` prints them: one per line, or NUL-separated (``-print0``).

A path is data: every character of a name is kept (leading and trailing spaces, a newline
inside a NUL-separated name), and bytes that are not UTF-8 are kept as the file system's
own (``os.fsdecode``), so the path reaches the file it names.
"""

from __future__ import annotations

import os

from pnpseg.errors import PnpsegError


def split_paths(data: bytes, null: bool = False) -> list[str]:
    """The paths in ``data``: NUL-separated with ``null``, else one per line (``\\n``); empty
    entries are skipped. NUL characters in line mode are refused: they are ``find -print0``
    output, and no path can hold one."""
    if not null and b"\0" in data:
        raise PnpsegError("the path list holds NUL characters (find -print0 output?): pass -0/--null to split on them")
    return [os.fsdecode(entry) for entry in data.split(b"\0" if null else b"\n") if entry]
