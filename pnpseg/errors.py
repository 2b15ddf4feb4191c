"""User-facing errors: the CLI prints their message as one line, never a traceback."""

from __future__ import annotations


class PnpsegError(Exception):
    """Base class for errors caused by user input or the environment, not by a bug."""


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


class ModelLoadError(PnpsegError):
    """A model that is neither cached nor reachable, or a local path that is not a model."""


class AdapterError(PnpsegError):
    """An adapter returned something that breaks the protocol (docs/adapters.md).

    The message names the adapter and the clause it broke, in one line.
    """


class EnvironmentProblem(PnpsegError):
    """Something the run needs is missing from this machine or unreachable: exit status 3."""


class MissingDependencyError(EnvironmentProblem):
    """An optional dependency that the chosen option needs is not installed (an environment
    problem: the message names the extra to install)."""


class ImageError(PnpsegError):
    """An input file that cannot be read as an image."""


def model_unavailable(name: str, adapter: str) -> ModelLoadError:
    """The one-line message every adapter gives when weights cannot be found offline."""
    return ModelLoadError(
        f"model {name!r} is not in the local cache and could not be downloaded (offline?); "
        f"download it where there is network access and pass its folder with --model PATH "
        f"(adapter {adapter!r})"
    )
