"""Where a LAVIS checkpoint and its BERT tokenizer come from; every failure is one line.

A model is a short name (``large-flickr``, ``coco``, ...) or a local ``.pth``/``.pt`` file.
Names resolve to the checkpoint URL of LAVIS's own model config (or, for BLIP's Flickr ITM
checkpoints, which LAVIS 1.0.2 does not list, the BLIP release); the file is looked up in
LAVIS's download cache and downloaded there only when its host answers. The tokenizer is
``bert-base-uncased``, as in LAVIS: a ``vocab.txt`` beside a local checkpoint wins, else the
Hugging Face cache, else the hub when reachable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

import pnpseg
from pnpseg import first_line, hub_quiet, hub_reachable

BERT_TOKENIZER = "bert-base-uncased"
BLIP_RELEASE = "https://storage.googleapis.com/sfr-vision-language-research/BLIP/models"


@dataclass(frozen=True)
class NamedModel:
    """A model name's checkpoint: a LAVIS ``(arch, model_type)`` config, or a plain URL."""

    arch: str | None = None
    model_type: str | None = None
    url: str | None = None

    def checkpoint_url(self) -> str:
        if self.url is not None:
            return self.url
        from lavis.common.registry import registry
        from omegaconf import OmegaConf

        model_class = registry.get_model_class(self.arch)
        return str(OmegaConf.load(model_class.default_config_path(self.model_type)).model.finetuned)


@dataclass(frozen=True)
class Source:
    """A resolved model: the local checkpoint file (None for a name) and the tokenizer's source."""

    name: str
    path: Path | None
    tokenizer: str


def resolve(name: str, names: Mapping[str, NamedModel], adapter: str) -> Source:
    """``name`` as a local checkpoint file or one of ``names``; a one-line error otherwise."""
    path = Path(name).expanduser()
    if path.is_file():
        vocab = path.parent / "vocab.txt"
        return Source(name, path, str(path.parent) if vocab.is_file() else BERT_TOKENIZER)
    if path.is_dir():
        raise pnpseg.ModelLoadError(f"{name!r} is a folder; adapter {adapter!r} takes a checkpoint file (.pth)")
    if name in names:
        return Source(name, None, BERT_TOKENIZER)
    if os.sep in name or name.endswith((".pth", ".pt")):
        raise pnpseg.ModelLoadError(f"no checkpoint file at {name!r}")
    raise pnpseg.ModelLoadError(
        f"unknown LAVIS model {name!r} for adapter {adapter!r}; use one of {', '.join(names)} or a local .pth file"
    )


def checkpoint_file(source: Source, names: Mapping[str, NamedModel], adapter: str) -> Path:
    """The checkpoint on disk: the local file, LAVIS's cached copy, or a fresh download."""
    if source.path is not None:
        return source.path
    from lavis.common.dist_utils import download_cached_file
    from timm.models.hub import get_cache_dir

    url = names[source.name].checkpoint_url()
    cached = Path(get_cache_dir()) / os.path.basename(urlparse(url).path)
    if cached.is_file():
        return cached
    endpoint = f"{urlparse(url).scheme}://{urlparse(url).netloc}"
    if not hub_reachable(endpoint):
        raise pnpseg.ModelLoadError(
            f"LAVIS model {source.name!r} is not in LAVIS's cache ({cached.parent}) and could not be downloaded "
            f"(offline?); download {url} where there is network access and pass the file with --model PATH "
            f"(adapter {adapter!r})"
        )
    try:
        return Path(download_cached_file(url, check_hash=False, progress=True))
    except OSError as exc:
        raise pnpseg.ModelLoadError(f"could not download {url} for adapter {adapter!r} ({first_line(exc)})") from None


def check_keys(state: Mapping[str, torch.Tensor], required: tuple[str, ...], name: str, suggestion: str) -> None:
    """``required`` keys must be there: a pretraining or captioning checkpoint has no ITM head."""
    missing = [key for key in required if key not in state]
    if missing:
        raise pnpseg.ModelLoadError(f"{name!r} has no image-text-matching weights (missing {missing[0]}); {suggestion}")


def load_tokenizer(source: Source, adapter: str) -> Any:
    """A fast BERT tokenizer (character offsets) from ``source.tokenizer``, cache first."""
    from transformers import BertTokenizerFast

    where = source.tokenizer
    if where != BERT_TOKENIZER:
        try:
            return BertTokenizerFast.from_pretrained(where)
        except (OSError, ValueError) as exc:
            raise pnpseg.ModelLoadError(f"no BERT tokenizer in {where!r} ({first_line(exc)})") from None
    try:
        return BertTokenizerFast.from_pretrained(where, local_files_only=True)
    except OSError:
        pass
    if hub_reachable():
        try:
            with hub_quiet():
                return BertTokenizerFast.from_pretrained(where)
        except OSError:
            pass
    raise pnpseg.ModelLoadError(
        f"the {BERT_TOKENIZER!r} tokenizer that LAVIS uses is not in the Hugging Face cache and could not be "
        f"downloaded (offline?); put its vocab.txt beside the checkpoint file (adapter {adapter!r})"
    )
