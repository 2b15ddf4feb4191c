"""Checking that ``--out`` can be the folder a run writes into, before any work starts.

A file (an input image included) where the folder should be is a usage error; a folder
the user may not write into, a read-only or full file system is the environment's fault.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from pnpseg.errors import STORAGE_ERRNOS, EnvironmentProblem, PnpsegError


def stops_the_run(error: OSError) -> bool:
    """True for the errors after which no further output can be written: a full disk or
    quota, and a folder that turned read-only or forbidden mid-run (stop the run)."""
    return error.errno in STORAGE_ERRNOS


def storage_advice(error: OSError) -> str:
    """What to do before running the same command again."""
    return "free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "make the folder writable"


def check_output_folder(out: Path) -> None:
    """Prove that ``out`` can be created and written into, leaving no trace.

    The missing part of the path is created, a probe file written and removed, and the
    folders this created are removed again: a run that fails later (a bad class list, a
    model that will not load) leaves nothing behind. Raises :class:`PnpsegError` (exit 2)
    when ``out`` or an ancestor is a file, and :class:`EnvironmentProblem` (exit 3) when
    the folder cannot be created or written.
    """
    missing = []
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                where = "" if folder == out else f" ({folder} is a file)"
                raise PnpsegError(f"--out {out} is not a folder{where}; choose another --out")
            break
        missing.append(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pnpseg-probe-", dir=out)
        try:
            os.write(fd, b"pnpseg")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        message = f"cannot write to --out {out}: {error.strerror or error}"
        if error.errno in STORAGE_ERRNOS:
            raise EnvironmentProblem(message) from None
        raise PnpsegError(message) from None
    finally:
        for folder in missing:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
