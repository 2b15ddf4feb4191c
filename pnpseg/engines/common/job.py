"""The engine-neutral job description and the settings fingerprint every record carries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pnpseg.io.images import InputItem
from pnpseg.method.defaults import DEFAULT_ADAPTER
from pnpseg.specs import redact_credentials


def fingerprint(table: Mapping[str, str], settings: Mapping[str, Any]) -> str:
    """16 hex digits naming a class table and settings: two runs may share an output folder
    (and count each other's results as done) only if their fingerprints are equal."""
    text = json.dumps({"classes": dict(table), "settings": dict(settings)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Built:
    """What :meth:`JobSpec.build` makes: the model side of a job."""

    segmenter: Any  # pnpseg.method.segmenter.Segmenter
    class_source: Any  # pnpseg.sources.class_sources.ClassSource
    settings: dict[str, Any]  # as the manifest records them


@dataclass
class JobSpec:
    """A ``segment`` job without its inputs, output folder or engine knobs (picklable when
    ``class_source`` is a spec string, which is what the Ray engine ships to its workers)."""

    classes: list[str]
    adapter: str = DEFAULT_ADAPTER
    model: str | None = None
    device: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    #: ``--class-source NAME[:options]``, or a ready ClassSource object (local engine only).
    class_source: Any = "all"

    def class_source_for(self, items: Sequence[InputItem] = ()) -> Any:
        """The class source, its options and ``items`` against it checked (before any weights load)."""
        from pnpseg.sources.class_sources import build_class_source, check_inputs

        source = self.class_source if not isinstance(self.class_source, str) else None
        if source is None:
            source = build_class_source(self.class_source, self.classes)
        check_inputs(source, items)
        return source

    def build(self, items: Sequence[InputItem] = ()) -> Built:
        """The class source (:meth:`class_source_for`), the Segmenter (tokenizer-level class
        checks before any weights load) and the settings, as every engine builds them."""
        from pnpseg.method.segmenter import Segmenter

        source = self.class_source_for(items)
        segmenter = Segmenter.from_pretrained(
            self.model, adapter=self.adapter, device=self.device, precision=self.precision, **self.params
        )
        segmenter.plan(self.classes)
        settings: dict[str, Any] = {"adapter": self.adapter, "model": self.model, "params": segmenter.params.to_dict()}
        if self.precision != "fp32":  # fp32 runs keep the settings of earlier versions
            settings["precision"] = self.precision
        if source.name != "all":  # likewise for the default class source
            spec = self.class_source if isinstance(self.class_source, str) else None
            settings["class_source"] = redact_credentials(spec) if spec else source.name  # no password on disk
        return Built(segmenter, source, json.loads(json.dumps(settings)))
