"""JSON that a user or another program wrote (presets, class and label files, ``classes.json``,
manifest lines, model configs, LLM answers): nesting too deep for Python's parser is malformed
JSON like any other, a ``ValueError`` each reader already reports, never a ``RecursionError``
that would end the run as a bug."""

from __future__ import annotations

import json
from typing import Any


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` that raises ``ValueError`` for every malformed document, too-deep ones included."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
