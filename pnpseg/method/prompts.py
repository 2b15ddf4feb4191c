"""Step 1, text side: class names → prompts → which tokens belong to which class.

Tokens are assigned to classes by character offsets, never by guessing from word-piece
markers, so multi-word and multi-token names map correctly for any tokenizer. When the
names do not fit in the text encoder, they are split into chunks that do (docs/method.md §1).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pnpseg import errors
from pnpseg.errors import ClassNameError
from pnpseg.method.adapter import TokenizedText
from pnpseg.method.compat import arithmetic

PREFIX = "A picture of "

Tokenize = Callable[[Sequence[str]], TokenizedText]


def build_prompt(names: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``"A picture of c1 c2 …"`` and each name's half-open character span in it."""
    prompt, spans = PREFIX, []
    for i, name in enumerate(names):
        if i:
            prompt += " "
        spans.append((len(prompt), len(prompt) + len(name)))
        prompt += name
    return prompt, spans


def tokens_of_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices of the tokens overlapping each span (empty-offset tokens are special)."""
    return [[t for t, (a, b) in enumerate(offsets) if b > a and a < end and b > start] for start, end in spans]


def shorten(name: str, limit: int = 60) -> str:
    """A class name cut to ``limit`` characters for messages (a 5000-character name floods a terminal)."""
    return name if len(name) <= limit else f"{errors.shorten(name, limit)}({len(name)} characters)"


def validate_names(names: Sequence[str]) -> list[str]:
    """Reject class lists that cannot be meaningful, before any model is touched."""
    if not names:
        raise ClassNameError("no class names given")
    cleaned = [unicodedata.normalize("NFC", " ".join(str(n).split())) for n in names]
    blank = [i + 1 for i, n in enumerate(cleaned) if not n]
    if blank:
        raise ClassNameError(f"blank class name at position(s) {', '.join(map(str, blank))}")
    seen: dict[str, str] = {}
    duplicates = []
    for name in cleaned:
        key = name.casefold()
        if key in seen:
            duplicates.append(name)
        seen.setdefault(key, name)
    if duplicates:
        raise ClassNameError(f"duplicate class name(s): {', '.join(sorted(set(map(shorten, duplicates))))}")
    return cleaned


@dataclass(frozen=True)
class Chunk:
    """One prompt: which of the image's classes it covers and their tokens."""

    prompt: str
    classes: tuple[int, ...]  # indices into the image's class list
    tokens: tuple[tuple[int, ...], ...]  # per covered class, its token indices


def plan_prompts(names: Sequence[str], tokenize: Tokenize, max_length: int) -> list[Chunk]:
    """Split ``names`` greedily into prompts that fit ``max_length`` tokens.

    Raises ClassNameError for a name that alone does not fit, or whose tokens are all
    unknown to the tokenizer (it would have no attention of its own).
    """
    chunks: list[list[int]] = []
    for index, name in enumerate(names):
        if chunks and _length(tokenize, [names[i] for i in chunks[-1]] + [name]) <= max_length:
            chunks[-1].append(index)
            continue
        if _length(tokenize, [name]) > max_length:
            raise ClassNameError(
                f"class name {shorten(name)!r} is too long for the text encoder ({max_length} tokens with the prompt)"
            )
        chunks.append([index])
    prompts = [build_prompt([names[i] for i in chunk]) for chunk in chunks]
    text = tokenize([prompt for prompt, _ in prompts])
    planned, bad = [], []
    for b, (chunk, (prompt, spans)) in enumerate(zip(chunks, prompts)):
        tokens = tokens_of_spans(text.offsets[b], spans)
        for index, toks in zip(chunk, tokens):
            if not toks or all(text.unknown[b][t] for t in toks):
                bad.append(names[index])
        planned.append(Chunk(prompt, tuple(chunk), tuple(tuple(t) for t in tokens)))
    if bad:
        raise ClassNameError(f"class name(s) the model's tokenizer cannot represent: {', '.join(map(shorten, bad))}")
    return planned


def _length(tokenize: Tokenize, names: Sequence[str]) -> int:
    return int(tokenize([build_prompt(names)[0]]).attention_mask.sum())


def token_weights(chunks: Sequence[Chunk], length: int, num_classes: int, compat: str = "paper") -> torch.Tensor:
    """(chunks, num_classes, length) matrix averaging each class's tokens (docs/method.md §1).

    Row k of chunk c holds 1/n on the n tokens of image class k if chunk c covers it, so
    ``weights @ cam`` turns per-token maps into per-class maps in one matmul. The weight of
    each token is the ``compat`` mode's (:meth:`~pnpseg.method.compat.Paper.token_weight`:
    under ``"authors"`` the last class of each prompt sums its tokens, docs/method.md §6).
    """
    rules = arithmetic(compat)
    weights = torch.zeros(len(chunks), num_classes, length)
    for c, chunk in enumerate(chunks):
        for k, toks in zip(chunk.classes, chunk.tokens):
            weights[c, k, list(toks)] = rules.token_weight(len(toks), k == chunk.classes[-1])
    return weights
