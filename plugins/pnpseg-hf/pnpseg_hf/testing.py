"""Tiny Hugging Face checkpoints for adapter tests: vocabularies, save-to-folder, variants.

Real weights cannot be downloaded in a test. Build the real model class from a small
config, save it with its processor, and load the folder by path exactly as a downloaded
checkpoint: loading, shapes, hooks and gradients are all genuine. Then run
:func:`pnpseg.testing.check_adapter` on it::

    from pnpseg_hf.testing import save_tiny, wordpiece_vocab
    vocab = wordpiece_vocab()
    tokenizer = transformers.BertTokenizer(vocab=vocab, model_max_length=64)
    folder = save_tiny(tmp_path / "tiny", lambda: MyModelClass(small_config), processor)
    check_adapter(MyAdapter(model=str(folder)))
"""

from __future__ import annotations

import os
import string
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

#: BERT's special tokens.
__all__ = [
    "BERT_SPECIALS",
    "PROCESSOR_FILES",
    "WORDS",
    "byte_level_vocab",
    "offline_default_model_error",
    "resave_as",
    "save_tiny",
    "wordpiece_vocab",
]

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Whole-word tokens of the tiny vocabularies (anything else is spelt piece by piece).
WORDS = ("a", "picture", "of", "cat", "dog", "grass", "sky", "red", "blue")
#: The files a processor writes next to the weights.
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "processor_config.json",
    "preprocessor_config.json",
)


def wordpiece_vocab(specials: Sequence[str] = BERT_SPECIALS, words: Sequence[str] = WORDS) -> dict[str, int]:
    """A WordPiece vocabulary (for ``BertTokenizer(vocab=...)``) that spells any ASCII text.

    Specials, every lowercase letter and digit with its ``##`` form, punctuation, then
    ``words``; only non-ASCII input (an emoji, say) becomes ``[UNK]``.
    """
    tokens = list(specials)
    chars = string.ascii_lowercase + string.digits
    tokens += list(chars) + [f"##{c}" for c in chars] + list(".,!?'-_/()")
    tokens += [w for w in dict.fromkeys(words) if w not in tokens]
    return {tok: i for i, tok in enumerate(tokens)}


def byte_level_vocab(words: Sequence[str] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """RoBERTa specials, the 256 byte-level symbols, and merges spelling ``Ġword`` for ``words``.

    For ``RobertaTokenizer(vocab=..., merges=...)``: every string is representable
    (byte-level BPE has no unknown tokens); the listed words become one token each when
    preceded by a space.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = ["Ġ", *word]
        current = pieces[0]
        for piece in pieces[1:]:
            merge = (current, piece)
            current += piece
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(current, len(vocab))
    return vocab, merges


def save_tiny(
    folder: str | os.PathLike[str],
    make_model: Callable[[], Any],
    processor: Any,
    edit_weights: Callable[[Any], None] | None = None,
    seed: int = 0,
) -> Path:
    """Seed, build the model (eval), optionally edit its weights (under ``no_grad``), and
    save it and ``processor`` to ``folder``: a checkpoint folder an adapter loads by path.

    Random initialisation gives near-uniform attention; ``edit_weights`` can sharpen it so
    that a wrong patch order shows in the maps.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = make_model().eval()
    if edit_weights is not None:
        with torch.no_grad():
            edit_weights(model)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def resave_as(tiny: str | os.PathLike[str], folder: str | os.PathLike[str], model_class: str) -> Path:
    """The checkpoint ``tiny`` loaded as ``transformers.<model_class>`` (for instance the
    bare model without the matching head) and saved with the same processor to ``folder``.

    An adapter should load its config and processor, then refuse it in one line when the
    weights load (``pnpseg.ModelLoadError``: no image-text-matching weights).
    """
    import transformers

    tiny, folder = Path(tiny), Path(folder)
    getattr(transformers, model_class).from_pretrained(tiny).save_pretrained(folder)
    for name in PROCESSOR_FILES:
        if (tiny / name).is_file():
            (folder / name).write_bytes((tiny / name).read_bytes())
    return folder


def offline_default_model_error(adapter_class: type, hf_home: str | os.PathLike[str]) -> str:
    """The error an adapter gives, in a fresh offline interpreter with an empty cache, for
    its default model: what a user on an offline machine sees. Returns the error line
    (``"<type>: <message>"``), or ``"no error"``.

    huggingface_hub reads ``HF_HUB_OFFLINE`` and ``HF_HOME`` at import, hence the subprocess.
    """
    code = (
        "import sys, importlib\n"
        f"cls = getattr(importlib.import_module({adapter_class.__module__!r}), {adapter_class.__qualname__!r})\n"
        "try:\n"
        "    cls().tokenize(['a cat'])\n"
        "except Exception as exc:\n"
        "    print('ERROR ' + type(exc).__name__ + ': ' + str(exc))\n"
        "else:\n"
        "    print('ERROR no error')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "NO_COLOR": "1"}
    for name in ("HF_HUB_CACHE", "TRANSFORMERS_CACHE"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = [line[len("ERROR ") :] for line in proc.stdout.splitlines() if line.startswith("ERROR ")]
    if not lines:
        raise RuntimeError(f"the check did not run: {proc.stderr.strip()[-500:]}")
    return lines[0] if len(lines) == 1 else "\n".join(lines)
