"""``NAME[:key=value,...]``: the one option syntax of ``--class-source`` and ``--postprocess``.

``parse_spec`` splits the name from its options, ``parse_options`` checks and converts the
options, and ``split_specs`` cuts a comma-separated list of specs (``blur,islands:min_area=64,
max_passes=2,crf``), where a bare ``key=value`` continues the options of the spec before it.
``parse_counted`` reads the rules that take one count, ``NAME:N`` (``topk:10``,
``if-fewer-prompted:3``, ``if-fewer-predicted:3``); ``respell`` turns a rule's old name into
its new one, with a deprecation warning.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pnpseg.errors import PnpsegDeprecationWarning, PnpsegError


def parse_spec(spec: str, flag: str) -> tuple[str, str]:
    """``"itm:top=3"`` → ``("itm", "top=3")``; ``"all"`` → ``("all", "")``."""
    name, _, options = spec.strip().partition(":")
    if not name.strip():
        raise PnpsegError(f"{flag} {spec!r}: no name before the options")
    return name.strip(), options.strip()


def parse_options(where: str, options: str, allowed: Mapping[str, Callable[[str], Any]] | None) -> dict[str, Any]:
    """``"top=3,threshold=0.4"`` → ``{"top": 3, "threshold": 0.4}``, checked against ``allowed``
    (key → converter raising ValueError; ``None``: any key, values as :func:`literal`).
    ``where`` starts every message, e.g. ``"--class-source itm"``."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in options.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or (allowed is not None and key not in allowed):
            raise PnpsegError(
                f"{where}: bad option {part!r}; options are "
                + (", ".join(f"{k}=..." for k in (allowed or {})) or "none")
            )
        convert = allowed[key] if allowed is not None else literal
        try:
            values[key] = convert(value.strip())
        except ValueError:
            raise PnpsegError(
                f"{where}: option {key} has a bad value {value.strip()!r} (expected {expected(convert)})"
            ) from None
    return values


def expected(convert: Callable[[str], Any]) -> str:
    """What a converter accepts, in words, for an option's error message."""
    known = {int: "a whole number", float: "a number", _number: "a number", _boolean: "true or false"}
    if convert in known:
        return known[convert]
    doc = (getattr(convert, "__doc__", None) or "").strip().splitlines()
    return doc[0].rstrip(".") if doc else getattr(convert, "__name__", "another value")


def parse_counted(text: str, names: Collection[str]) -> tuple[str, int] | None:
    """``"topk:10"`` → ``("topk", 10)`` when the name is one of ``names`` and the count a whole
    number ≥ 1; otherwise None, for the caller to say what it expected."""
    name, sep, count = text.strip().partition(":")
    if name in names and sep and re.fullmatch(r"\d+", count) and int(count) >= 1:
        return name, int(count)
    return None


def respell(text: str, renamed: Mapping[str, str], what: str) -> str:
    """``"few:3"`` → ``"if-fewer-predicted:3"`` when ``renamed`` maps ``few`` to its new name,
    warning (:class:`~pnpseg.errors.PnpsegDeprecationWarning`) that the old spelling will go;
    any other text unchanged. ``what`` names the setting in the warning."""
    name, sep, rest = text.strip().partition(":")
    if not sep or name not in renamed:
        return text
    new = f"{renamed[name]}:{rest}"
    warnings.warn(
        f"{what} {text.strip()!r} is spelled {new!r} now; the old spelling will go",
        PnpsegDeprecationWarning,
        stacklevel=3,
    )
    return new


def split_specs(text: str) -> list[str]:
    """``"blur,islands:min_area=64,max_passes=2,crf"`` → ``["blur", "islands:min_area=64,max_passes=2", "crf"]``."""
    specs: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if specs and ":" in specs[-1] and "=" in part and ":" not in part.partition("=")[0]:
            specs[-1] += "," + part  # key=value: one more option of the spec before
        else:
            specs.append(part)
    return specs


def literal(text: str) -> int | float | bool | str:
    """An option value as the most specific of int, float, true/false, else the text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def factory_options(factory: Callable[..., Any]) -> dict[str, Callable[[str], Any]] | None:
    """The keyword options a factory takes (converters from their defaults' types), or None
    when it takes ``**kwargs`` (any key goes)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: no options
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name: _converter(p.default) for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _converter(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _boolean
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return _number
    return literal


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def _number(text: str) -> int | float:
    value = literal(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(text)
    return value


#: ``scheme://user:password@`` (or ``scheme://token@``) inside any text.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:,]*)(?P<password>:[^/@\s,]*)?@")


def redact_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked (``http://user:***@host``,
    ``https://***@host`` for a bare token): what a spec may show in a manifest, a message
    or a log, as the API key itself is only ever named by its variable."""
    return _USERINFO.sub(
        lambda m: f"{m['scheme']}{m['user']}:***@" if m["password"] else f"{m['scheme']}***@",
        text,
    )
