"""User-facing errors: the CLI prints their message as one line, never a traceback."""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    """The one exit-code table: every command exits with one of these (README "Exit codes"
    lists them, and a test keeps it in step with :data:`EXIT_KINDS`)."""

    OK = 0
    INPUT_FAILED = 1
    USAGE = 2
    ENVIRONMENT = 3
    BUG = 4
    INTERRUPTED = 130


#: Each exit code's kind (the ``--json`` document's ``error.kind``) and what it means.
EXIT_KINDS: dict[int, tuple[str, str]] = {
    ExitCode.OK: ("ok", "everything asked for was done"),
    ExitCode.INPUT_FAILED: ("inputs failed", "some inputs failed; each is recorded, the others are done"),
    ExitCode.USAGE: ("usage", "a bad option, value, preset, class list or file"),
    ExitCode.ENVIRONMENT: (
        "environment",
        "a missing model, dependency or service, or an output that cannot be stored",
    ),
    ExitCode.BUG: ("bug", "an unexpected error"),
    ExitCode.INTERRUPTED: ("interrupted", "interrupted"),
}


#: errno values that mean "this machine cannot store the output" (a full disk or quota, a
#: read-only or forbidden folder): exit status 3 wherever they are raised, never a bug.
STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


class PnpsegError(Exception):
    """Base class for errors caused by user input or the environment, not by a bug.

    ``exit_code`` is the CLI's exit status for it: 2 (usage) unless a subclass says otherwise.
    """

    exit_code: int = ExitCode.USAGE


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis: a huge value or name in a
    message must not flood the terminal."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), at most 160 characters: what
    a one-line error quotes of a library's failure."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


class PnpsegDeprecationWarning(DeprecationWarning):
    """An old spelling that still works but will go: the CLI prints it as one ``warning:`` line."""


class NoImagesError(PnpsegError):
    """The inputs held no image to process: exit 1, like inputs that failed."""

    exit_code = ExitCode.INPUT_FAILED


class EnvironmentProblem(PnpsegError):
    """Not the user's input but this machine: a missing model, dependency or service, or an
    output it cannot store (an unwritable folder, a full disk): exit status 3."""

    exit_code = ExitCode.ENVIRONMENT


class MissingDependencyError(EnvironmentProblem, ImportError):
    """An optional dependency that the chosen option needs is not installed (the message
    names the extra to install)."""


class UnknownNameError(PnpsegError, KeyError):
    """An adapter/postprocessor name that no plugin registered."""

    def __init__(self, kind: str, name: str, available: list[str]):
        self.kind, self.name, self.available = kind, name, available
        listed = ", ".join(available) if available else "none installed"
        super().__init__(f"unknown {kind} {name!r}; available: {listed}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ClassNameError(PnpsegError, ValueError):
    """A class list the pipeline cannot use (empty, duplicates, blank, untokenisable...)."""


class ModelLoadError(EnvironmentProblem):
    """A model that is neither cached nor reachable, or a local path that is not a model."""


class PluginDefectError(EnvironmentProblem):
    """An installed plugin is broken: its factory target does not exist, its hook raised, or
    its adapter breaks the protocol. Exit 3, like anything else wrong with what is installed:
    the user's input is not at fault, and the message names the plugin to fix or remove."""


class AdapterError(PluginDefectError):
    """An adapter returned something that breaks the protocol (docs/adapters.md).

    The message names the adapter, the clause it broke and the package that ships it, in
    one line (exit 3, a plugin defect).
    """


class ImageError(PnpsegError):
    """An input file that cannot be read as an image: ``"<path>: <reason>"``.

    ``reason`` alone is what a record that already names the input should show.
    """

    def __init__(self, path: object, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def model_unavailable(name: str, adapter: str) -> ModelLoadError:
    """The one-line message every adapter gives when weights cannot be found offline."""
    return ModelLoadError(
        f"model {name!r} is not in the local cache and could not be downloaded (offline?); "
        f"download it where there is network access and pass its folder with --model PATH "
        f"(adapter {adapter!r})"
    )
