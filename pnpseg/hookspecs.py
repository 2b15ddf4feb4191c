"""Plugin hook specifications (pluggy project ``pnpseg``).

Every hook receives a ``register(name, factory)`` callback; built-in features use the same
hooks as outside plugins (see ``pnpseg/builtins.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from pnpseg.errors import MissingDependencyError, PluginDefectError

hookspec = pluggy.HookspecMarker("pnpseg")
hookimpl = pluggy.HookimplMarker("pnpseg")

Register = Callable[[str, Callable[..., Any]], None]
#: ``register(model_type, adapter_name)`` for :func:`register_model_types`.
RegisterModelType = Callable[[str, str], None]


@dataclass(frozen=True)
class LazyFactory:
    """A factory named ``"module:attribute"``, imported on its first call.

    Register this instead of the class itself, so that loading the plugin (which every
    ``pnpseg`` command does, ``--help`` included) imports nothing heavy such as torch or
    transformers: ``register("toy", pnpseg.lazy("my_plugin.adapter:ToyAdapter"))``.
    """

    target: str

    def load(self) -> Callable[..., Any]:
        """The target; a missing module is a missing dependency, a missing attribute (a typo
        in the plugin) a plugin defect: both exit 3 with one line, never a traceback."""
        module, _, attribute = self.target.partition(":")
        try:
            loaded = importlib.import_module(module)
        except ImportError as error:
            raise MissingDependencyError(f"{self.target} cannot be imported: {error}") from error
        try:
            return getattr(loaded, attribute)
        except AttributeError:
            raise PluginDefectError(
                f"plugin factory {self.target!r} does not exist: module {module!r} has no attribute {attribute!r}"
            ) from None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)


def lazy(target: str) -> LazyFactory:
    """A factory that imports ``"module:attribute"`` when first called (see :class:`LazyFactory`)."""
    if ":" not in target:
        raise ValueError(f"lazy factory target must be 'module:attribute', got {target!r}")
    return LazyFactory(target)


@hookspec
def register_adapters(register: Register) -> None:
    """Register VLM adapters.

    ``factory(model: str | None = None, device: str | torch.device = "cpu") -> VLMAdapter``;
    ``model`` is a checkpoint name or local path, ``None`` meaning the adapter's default.
    """


@hookspec
def register_model_types(register: RegisterModelType) -> None:
    """Claim checkpoint types, so that ``Segmenter.from_pretrained(model)`` finds the adapter.

    ``register(model_type, adapter_name)``: ``model_type`` is a value of a Hugging Face
    ``config.json``'s ``model_type`` (``"blip"``) or one of its ``architectures``
    (``"BlipForImageTextRetrieval"``, more specific: tried first, as ``AutoModel`` does);
    ``adapter_name`` is a name registered with ``register_adapters``.
    """


@hookspec
def register_postprocessors(register: Register) -> None:
    """Register postprocessors for ``--postprocess``.

    ``factory(**options) -> Postprocessor``: ``--postprocess name:key=value,...`` passes each
    option as a keyword argument, converted to the type of the factory's default for it
    (a factory taking ``**kwargs`` gets any key). A postprocessor is a callable
    ``(scores: Tensor[C, H, W], image: ndarray[H, W, 3] uint8, params: SegmentParams)
    -> Tensor[C, H, W]`` mapping per-channel scores to refined scores.
    """


@hookspec
def register_scorers(register: Register) -> None:
    """Register image-text scorers for the tuning reward (``pnpseg tune --scorer``).

    ``factory(model: str | None = None, device: str | torch.device = "cpu") -> Scorer``,
    where a scorer is a callable ``(images: Sequence[PIL.Image | ndarray | Tensor],
    class_names: Sequence[str]) -> Tensor[N_images, N_classes]`` of similarity logits.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register evaluation datasets for ``pnpseg eval --dataset``.

    ``factory(root: Path) -> pnpseg.evaluation.datasets.Dataset``; ``pnpseg.evaluation.datasets.folder_dataset(...)``
    builds one for an image folder + label PNG folder + class list file.
    """


@hookspec
def register_class_sources(register: Register) -> None:
    """Register per-image class sources for ``--class-source NAME[:options]``.

    ``factory(options: str, vocabulary: list[str]) -> ClassSource``: ``options`` is the text
    after ``NAME:`` (empty if none); the factory checks what it can before any model loads.
    A source is a callable ``(image: PIL.Image, path: Path | None, vocabulary: list[str],
    segmenter: Segmenter) -> pnpseg.sources.class_sources.Proposal`` returning the subset of the
    vocabulary to segment (vocabulary order, optional scores); it raises
    ``pnpseg.sources.class_sources.ClassSourceImageError`` for a problem with one image.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``pnpseg`` command line.

    ``cli`` is the :class:`typer.Typer` app: decorate functions with ``@cli.command()`` (or
    add a sub-app with ``cli.add_typer``). Import heavy modules inside the command, not at
    plugin import, so that ``pnpseg --help`` stays fast.
    """
