"""Which classes to segment in each image: class sources (the poster's step 1).

Every class map is min-max normalised, so a class that is absent from an image still lights
up somewhere. A *class source* picks, per image, the subset of the vocabulary (the full
``--classes`` list) worth segmenting. Sources are registered with the
``register_class_sources`` hook: ``factory(options: str, vocabulary: list[str]) ->
ClassSource``, where ``options`` is whatever follows ``NAME:`` in ``--class-source
NAME[:options]`` (empty if nothing) and the factory does every check it can up front
(before any model loads). A :class:`ClassSource` is called per image::

    source(image: PIL.Image (RGB), item: InputItem | None, vocabulary: list[str], segmenter)
        -> Proposal(classes=[...subset, vocabulary order...], scores={name: float} | None)

(``item`` says where the image came from: ``item.path`` and ``item.relative``.)

and raises :class:`ClassSourceImageError` for a problem with that one image (the CLI records
it in the manifest and goes on). A source may also define ``check_inputs(items)``, which the
engines call with every discovered :class:`InputItem` before the model loads (``file`` uses it
to refuse a key that names several inputs). Built-ins: ``all``, ``file``, ``itm``, ``clip``, ``llm``
(see docs/class-sources.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from pnpseg.errors import PnpsegError, shorten
from pnpseg.io.image_classes import ImageClasses
from pnpseg.io.images import InputItem
from pnpseg.method.prompts import PREFIX
from pnpseg.method.validation import check_output
from pnpseg.specs import parse_options, parse_spec, redact_credentials

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "all"
#: Prompts per ITM forward pass when ranking a large vocabulary.
ITM_CHUNK = 64


class ClassSourceImageError(PnpsegError):
    """A class source cannot propose classes for one image (e.g. it is missing from a file)."""


@dataclass
class Proposal:
    """The classes to segment in one image (in vocabulary order unless ``ordered``), and how
    they were chosen."""

    classes: list[str]
    scores: dict[str, float] | None = None
    source: str = ""
    #: ``{"name": "itm", "reason": "..."}`` when the source fell back to another one.
    fallback: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    #: Keep the source's order in the prompt instead of the vocabulary's (the authors'
    #: GPT-4o lists: the order decides which class ends the prompt, docs/method.md §6).
    ordered: bool = False

    def record(self) -> dict[str, Any]:
        """The manifest's ``class_source`` entry."""
        record: dict[str, Any] = {
            "name": self.source,
            "classes": list(self.classes),
            "scores": {k: round(float(v), 6) for k, v in self.scores.items()} if self.scores is not None else None,
            "fallback": self.fallback,
        }
        if self.notes:
            record["notes"] = list(self.notes)
        return record


class ClassSource(Protocol):
    name: str  # optional method: check_inputs(items: Sequence[InputItem]) -> None

    def __call__(
        self, image: Image.Image, item: InputItem | None, vocabulary: Sequence[str], segmenter: Any
    ) -> Proposal: ...


# -- options ------------------------------------------------------------------------------


def _threshold(text: str) -> float:
    """a number from 0 to 1"""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(text)
    return value


def _top(text: str) -> int:
    """a whole number of at least 1"""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


KEEP_OPTIONS: dict[str, Callable[[str], Any]] = {"threshold": _threshold, "top": _top}


def keep(scores: Mapping[str, float], vocabulary: Sequence[str], threshold: float | None, top: int | None) -> list[str]:
    """Classes with score ≥ ``threshold`` (default 0.5), or the ``top`` best; with both, the
    best ``top`` of those over the threshold. Never empty (the best class at least), and in
    vocabulary order."""
    ranked = sorted(vocabulary, key=lambda name: -scores[name])
    if top is not None and threshold is not None:
        chosen = [n for n in ranked[:top] if scores[n] >= threshold]
    elif top is not None:
        chosen = ranked[:top]
    else:
        chosen = [n for n in ranked if scores[n] >= (0.5 if threshold is None else threshold)]
    if not chosen:
        chosen = ranked[:1]
    wanted = set(chosen)
    return [name for name in vocabulary if name in wanted]


# -- all ----------------------------------------------------------------------------------


class AllSource:
    """Every class of the vocabulary in every image (the paper's setting)."""

    name = "all"

    def __init__(self, options: str = "", vocabulary: Sequence[str] = ()) -> None:
        parse_options("--class-source all", options, {})

    def __call__(self, image, item, vocabulary, segmenter) -> Proposal:
        return Proposal(list(vocabulary), source=self.name)


# -- file ---------------------------------------------------------------------------------


def _confidence(text: str) -> float:
    """a number from 0 to 100"""
    value = float(text)
    if not 0.0 <= value <= 100.0:
        raise ValueError(text)
    return value


def _format(text: str) -> str:
    """lists or gpt4o"""
    if text not in ("lists", "gpt4o"):
        raise ValueError(text)
    return text


FILE_OPTIONS: dict[str, Callable[[str], Any]] = {"format": _format, "min_confidence": _confidence, "dataset": str}


def split_file_options(options: str) -> tuple[str, dict[str, Any]]:
    """``"PATH,format=gpt4o,min_confidence=70"`` → ``("PATH", {...})``; commas in PATH stay."""
    parts = options.split(",")
    cut = len(parts)
    while cut > 1 and parts[cut - 1].partition("=")[0].strip() in FILE_OPTIONS:
        cut -= 1
    return ",".join(parts[:cut]).strip(), parse_options("file", ",".join(parts[cut:]), FILE_OPTIONS)


class FileSource:
    """Per-image class lists from a file: JSON or CSV lists of names (format:
    :mod:`pnpseg.io.image_classes`), or the authors' released GPT-4o answers
    (``format=gpt4o``, :mod:`pnpseg.sources.gpt4o`), which keep their answer order."""

    name = "file"

    def __init__(self, options: str = "", vocabulary: Sequence[str] = ()) -> None:
        path, opts = split_file_options(options)
        if not path:
            raise PnpsegError("--class-source file needs a path: file:PATH (JSON or CSV)")
        self.ordered = opts.get("format") == "gpt4o"
        if not self.ordered and opts.keys() - {"format"}:
            raise PnpsegError("--class-source file: min_confidence and dataset need format=gpt4o")
        rows = None
        if self.ordered:
            from pnpseg.sources.gpt4o import DEFAULT_MIN_CONFIDENCE, class_index, read_gpt4o

            index = class_index(opts.get("dataset"), vocabulary)
            rows = read_gpt4o(Path(path).expanduser(), index, opts.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
        self.table = ImageClasses(Path(path).expanduser(), "class file", rows)
        if vocabulary:
            self.table.check_vocabulary(vocabulary)

    def check_inputs(self, items: Sequence[InputItem]) -> None:
        """A key that lists several inputs (a bare file name in two folders) is an error."""
        self.table.check_unambiguous(items)

    def __call__(self, image, item, vocabulary, segmenter) -> Proposal:
        names = self.table.lookup(item) if item is not None else None
        if names is None:
            raise ClassSourceImageError(f"image not listed in class file {self.table.path}")
        if not names:
            raise ClassSourceImageError(f"image listed with no classes in class file {self.table.path}")
        if self.ordered:
            spelling = {name.casefold(): name for name in vocabulary}
            return Proposal([spelling[name.casefold()] for name in names], source=self.name, ordered=True)
        wanted = {name.casefold() for name in names}
        return Proposal([name for name in vocabulary if name.casefold() in wanted], source=self.name)


# -- itm ----------------------------------------------------------------------------------


class ItmSource:
    """Rank the vocabulary by the adapter's own ITM match probability for "A picture of c"."""

    name = "itm"

    def __init__(self, options: str = "", vocabulary: Sequence[str] = ()) -> None:
        opts = parse_options("--class-source itm", options, KEEP_OPTIONS)
        self.threshold, self.top = opts.get("threshold"), opts.get("top")

    @classmethod
    def keeping(cls, threshold: float | None, top: int | None) -> ItmSource:
        """An itm source with options already parsed (``llm``'s ``fallback_*``)."""
        source = cls()
        source.threshold, source.top = threshold, top
        return source

    def __call__(self, image, item, vocabulary, segmenter) -> Proposal:
        scores = itm_scores(segmenter, image, vocabulary)
        return Proposal(keep(scores, vocabulary, self.threshold, self.top), scores, self.name)


@torch.no_grad()
def itm_scores(segmenter: Any, image: Image.Image, vocabulary: Sequence[str]) -> dict[str, float]:
    """``sigmoid(match logit)`` of "A picture of <class>" for every class, one image.

    One preprocessing of the image; the prompts go in chunks of :data:`ITM_CHUNK` against the
    pixel batch of 1, which adapters broadcast (docs/adapters.md). With ``layers=[]`` no
    attention is captured.
    """
    adapter = segmenter.adapter
    pixels = adapter.preprocess([image], segmenter.input_size)
    logits = []
    for start in range(0, len(vocabulary), ITM_CHUNK):
        text = adapter.tokenize([PREFIX + name for name in vocabulary[start : start + ITM_CHUNK]])
        out = adapter.forward(pixels, text, [])
        check_output(adapter, out, pixels, text, [])
        logits.append(out.match_logit.detach().float().cpu())
    probs = torch.sigmoid(torch.cat(logits))
    return {name: float(p) for name, p in zip(vocabulary, probs)}


# -- clip ---------------------------------------------------------------------------------


class ClipSource:
    """Zero-shot multi-label ranking with an image-text scorer (default: the open_clip one).

    Scores are the softmax over the vocabulary of the scorer's logits (for the open_clip
    scorer: 100 · cosine to the prompt-ensembled text embeddings).
    """

    name = "clip"

    def __init__(self, options: str = "", vocabulary: Sequence[str] = ()) -> None:
        opts = parse_options(
            "--class-source clip", options, {**KEEP_OPTIONS, "model": str, "scorer": str, "device": str}
        )
        self.threshold, self.top = opts.get("threshold"), opts.get("top")
        if self.threshold is None and self.top is None:
            self.threshold = 0.1
        self.model, self.device = opts.get("model"), opts.get("device")
        from pnpseg.plugins import lookup

        self._factory = lookup("scorers", opts.get("scorer", "clip"))  # unknown scorer: error up front
        self._scorer: Any = None  # built on first use: the model loads only when an image comes

    def __call__(self, image, item, vocabulary, segmenter) -> Proposal:
        if self._scorer is None:
            device = self.device or (str(segmenter.adapter.device) if segmenter is not None else "cpu")
            self._scorer = self._factory(model=self.model, device=device)
        with torch.no_grad():
            probs = torch.softmax(self._scorer([image], list(vocabulary))[0].float(), dim=-1)
        scores = {name: float(p) for name, p in zip(vocabulary, probs)}
        return Proposal(keep(scores, vocabulary, self.threshold, self.top), scores, self.name)


# -- llm ----------------------------------------------------------------------------------


class LlmSource:
    """Ask an OpenAI-compatible chat model which classes are visible; ``itm`` on failure."""

    name = "llm"

    def __init__(self, options: str = "", vocabulary: Sequence[str] = ()) -> None:
        from pnpseg.sources.llm import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, LLMClient, is_plain_remote, parse_timeout

        opts = parse_options(
            "--class-source llm",
            options,
            {
                "url": str,
                "model": str,
                "key_env": str,
                "timeout": parse_timeout,
                "fallback": str,
                **{f"fallback_{k}": v for k, v in KEEP_OPTIONS.items()},
            },
        )
        url = opts.get("url") or os.environ.get(ENV_BASE_URL)
        model = opts.get("model") or os.environ.get(ENV_MODEL)
        key = os.environ.get(opts["key_env"]) if "key_env" in opts else os.environ.get(ENV_API_KEY)
        missing = [
            what for what, value in ((f"url= or {ENV_BASE_URL}", url), (f"model= or {ENV_MODEL}", model)) if not value
        ]
        if missing or url is None or model is None:
            raise PnpsegError(f"--class-source llm needs {' and '.join(missing)}")
        if is_plain_remote(url):
            log.warning(
                "llm class source: %s is plain http to a host that is not this machine: "
                "images%s travel unencrypted (use https)",
                redact_credentials(url),
                " and the API key" if key else "",
            )
        self.client = LLMClient(url, model, key, timeout=opts.get("timeout", 60.0))
        fallback = opts.get("fallback", "itm")
        if fallback not in ("itm", "all"):
            raise PnpsegError("--class-source llm: fallback must be itm or all")
        self.fallback: ItmSource | AllSource = (
            ItmSource.keeping(opts.get("fallback_threshold"), opts.get("fallback_top"))
            if fallback == "itm"
            else AllSource()
        )

    def __call__(self, image, item, vocabulary, segmenter) -> Proposal:
        from pnpseg.sources.llm import LLMError, parse_class_list

        try:
            answer = self.client.ask(image, vocabulary)
            classes, unknown = parse_class_list(answer, vocabulary)
            if not classes:
                raise LLMError(f"no class of the vocabulary in the answer {answer[:200]!r}")
        except Exception as error:  # any malformed answer or broken exchange: the documented fallback
            reason = str(error) if isinstance(error, LLMError) else f"malformed answer ({type(error).__name__})"
            log.warning("llm class source: %s; using %s", reason, self.fallback.name)
            proposal = self.fallback(image, item, vocabulary, segmenter)
            proposal.fallback = {"name": self.fallback.name, "reason": reason}
            proposal.source = self.name
            return proposal
        notes = []
        if unknown:
            note = dropped_names(unknown)
            log.warning("llm class source: %s", note)
            notes.append(note)
        return Proposal(classes, None, self.name, None, notes)


#: Names listed in a note about dropped names; the rest are counted, so an answer of 40 000
#: names costs its manifest record and warning a few hundred bytes, not 200 KB.
LISTED_NAMES = 10


def dropped_names(unknown: Sequence[str]) -> str:
    """``dropped 3 names not in the vocabulary: a, b, c`` (at most :data:`LISTED_NAMES`, each cut short)."""
    listed = ", ".join(shorten(name, 40) for name in unknown[:LISTED_NAMES])
    more = f", … ({len(unknown) - LISTED_NAMES} more)" if len(unknown) > LISTED_NAMES else ""
    return f"dropped {len(unknown)} name(s) not in the vocabulary: {listed}{more}"


# -- registry -----------------------------------------------------------------------------


def build_class_source(spec: str | None, vocabulary: Sequence[str] = ()) -> ClassSource:
    """``--class-source NAME[:options]`` → a ready source; checks options (and, for
    ``file``, the names against ``vocabulary``) before any model loads."""
    from pnpseg.plugins import lookup

    name, options = parse_spec(spec or DEFAULT_SOURCE, "--class-source")
    source = lookup("class_sources", name)(options, list(vocabulary))
    if not getattr(source, "name", None):
        source.name = name
    return source


def check_inputs(source: ClassSource, items: Sequence[InputItem]) -> None:
    """Let ``source`` check the whole input list before the model loads (if it wants to)."""
    check = getattr(source, "check_inputs", None)
    if check is not None:
        check(items)


def propose(
    source: ClassSource, image: Image.Image, item: InputItem | None, vocabulary: Sequence[str], segmenter: Any
) -> Proposal:
    """Call ``source`` and check its answer: a non-empty subset of the vocabulary, in
    vocabulary order unless the proposal is ``ordered``."""
    proposal = source(image, item, vocabulary, segmenter)
    if not isinstance(proposal, Proposal):  # a plugin returned a plain list
        proposal = Proposal(list(proposal), source=getattr(source, "name", ""))
    proposal.source = proposal.source or getattr(source, "name", "")
    wanted = set(proposal.classes)
    foreign = sorted(wanted - set(vocabulary))
    if foreign:
        raise ClassSourceImageError(f"class source {proposal.source!r} proposed unknown classes: {', '.join(foreign)}")
    proposal.classes = (
        list(dict.fromkeys(proposal.classes)) if proposal.ordered else [n for n in vocabulary if n in wanted]
    )
    if not proposal.classes:
        raise ClassSourceImageError(f"class source {proposal.source!r} proposed no classes")
    return proposal
