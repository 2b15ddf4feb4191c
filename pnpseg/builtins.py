"""The built-in adapters (and their model types), postprocessors, scorers and class sources, registered through the
same hooks as any plugin's.

Each factory is a :func:`pnpseg.lazy` target, so listing them (``pnpseg plugins``) or
building the CLI imports no torch; the module is imported when a factory is first looked up.
Built-in datasets register themselves in :mod:`pnpseg.evaluation.datasets` (no torch there).
"""

from __future__ import annotations

from pnpseg.hookspecs import Register, RegisterModelType, hookimpl, lazy


@hookimpl
def register_adapters(register: Register) -> None:
    register("synthetic", lazy("pnpseg.testing.synthetic:SyntheticAdapter"))


@hookimpl
def register_model_types(register: RegisterModelType) -> None:
    register("pnpseg-synthetic", "synthetic")  # SyntheticAdapter.model_type, as a literal: no torch import


@hookimpl
def register_postprocessors(register: Register) -> None:
    register("blur", lazy("pnpseg.method.postprocess.blur:GaussianBlur"))
    register("crf", lazy("pnpseg.method.postprocess.crf:DenseCRF"))


@hookimpl
def register_scorers(register: Register) -> None:
    register("clip", lazy("pnpseg.tuning.scorers:ClipScorer"))
    register("synthetic", lazy("pnpseg.testing.scorer:SyntheticScorer"))


@hookimpl
def register_class_sources(register: Register) -> None:
    for name, factory in (("all", "AllSource"), ("file", "FileSource"), ("itm", "ItmSource"), ("clip", "ClipSource")):
        register(name, lazy(f"pnpseg.sources.class_sources:{factory}"))
    register("llm", lazy("pnpseg.sources.class_sources:LlmSource"))
