"""The ``llm`` class source's client: an OpenAI-compatible chat endpoint through the ``openai`` SDK.

The image goes as a base64 ``data:`` URL, the model is asked which names of the vocabulary
are visible, and the answer is parsed leniently. Nothing is sent anywhere unless a user
selects that source. The SDK (extra ``pnpseg[llm]``) is imported only then.

Edges we hold ourselves, whatever the SDK's defaults: no redirect is followed (the key is
never sent to another origin), ``timeout`` is a deadline for the whole exchange, the body
is capped at :data:`MAX_BODY` bytes, and the answer's parsing is linear in its length.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import ipaddress
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from pnpseg.errors import MissingDependencyError, PnpsegError
from pnpseg.io.jsontext import parse_json
from pnpseg.method.resize import fit_longest_side
from pnpseg.specs import redact_credentials

ENV_BASE_URL = "PNPSEG_LLM_BASE_URL"
ENV_MODEL = "PNPSEG_LLM_MODEL"
ENV_API_KEY = "PNPSEG_LLM_API_KEY"
#: Largest answer body read (bytes); a longer one is a malformed answer.
MAX_BODY = 1 << 20

PROMPT = (
    "Which of the following classes are visible in this image? Classes: {classes}.\n"
    "Answer with a JSON list of the visible class names, spelled exactly as given, "
    'for example ["{example}"]. Answer with the JSON list only.'
)


class LLMError(PnpsegError):
    """The endpoint could not be reached, refused the request, or answered nonsense."""


def parse_timeout(text: str) -> float:
    """a number of seconds above 0

    ``timeout=`` seconds: finite and positive (``-1``, ``0``, ``nan``, ``inf`` are refused);
    the first docstring line is what an error message says the option expects.
    """
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


def is_plain_remote(url: str) -> bool:
    """True for an ``http://`` URL whose host is not loopback (images and key would go unencrypted)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


@dataclass
class LLMClient:
    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0  # seconds for the whole exchange: connect, send, every byte of the answer
    max_side: int = 1024  # images are downscaled to this longest side before sending

    def __post_init__(self) -> None:
        try:
            import openai
        except ImportError:
            raise MissingDependencyError("--class-source llm needs the openai SDK: pip install 'pnpseg[llm]'") from None
        self._openai = openai
        # The key is given explicitly (never OPENAI_API_KEY behind the user's back); no retries
        # (a failure falls back to another source); redirects are answered, not followed.
        self._client = openai.OpenAI(
            base_url=self.base_url.rstrip("/").removesuffix("/chat/completions"),
            api_key=self.api_key or "none",
            max_retries=0,
            timeout=self.timeout,
            http_client=openai.DefaultHttpxClient(follow_redirects=False, timeout=self.timeout),
        )

    def endpoint(self) -> str:
        """The URL asked, as messages and records show it (credentials masked)."""
        return redact_credentials(str(self._client.base_url).rstrip("/") + "/chat/completions")

    def ask(self, image: Image.Image, vocabulary: Sequence[str]) -> str:
        """Send the image and the question; return the assistant's text (raises LLMError).

        Runs in a worker thread so that ``timeout`` bounds the whole exchange even against a
        server that drips one byte at a time; the worker stops at its own deadline too.
        """
        deadline = time.monotonic() + self.timeout
        future: concurrent.futures.Future[str] = concurrent.futures.Future()

        def exchange() -> None:
            try:
                future.set_result(self._exchange(image, vocabulary, deadline))
            except BaseException as error:  # noqa: BLE001  (handed to the caller)
                future.set_exception(error)

        # A daemon thread: one stuck on a server that never stops dripping must not keep
        # the command from exiting once the image has fallen back.
        threading.Thread(target=exchange, name="pnpseg-llm", daemon=True).start()
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise LLMError(f"no complete answer from {self.endpoint()} within {self.timeout:g} s") from None

    def _exchange(self, image: Image.Image, vocabulary: Sequence[str], deadline: float) -> str:
        prompt = PROMPT.format(classes=", ".join(vocabulary), example=vocabulary[0] if vocabulary else "cat")
        messages: list[Any] = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt},
                    {"type": "image_url", "image_url": {"url": image_data_url(image, self.max_side)}},
                ],
            }
        ]
        openai = self._openai
        body = bytearray()
        try:
            with self._client.chat.completions.with_streaming_response.create(
                model=self.model, messages=messages, temperature=0
            ) as response:
                if response.status_code // 100 != 2:  # a redirect included: never followed
                    raise LLMError(f"HTTP {response.status_code} from {self.endpoint()}")
                for chunk in response.iter_bytes():  # as each read returns, so the deadline is checked
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise LLMError(f"the answer from {self.endpoint()} exceeds {MAX_BODY} bytes")
                    if time.monotonic() > deadline:
                        raise LLMError(f"no complete answer from {self.endpoint()} within {self.timeout:g} s")
        except openai.APIStatusError as error:
            raise LLMError(f"HTTP {error.status_code} from {self.endpoint()}") from None
        except openai.APITimeoutError:
            raise LLMError(f"no complete answer from {self.endpoint()} within {self.timeout:g} s") from None
        except openai.APIConnectionError as error:
            raise LLMError(f"cannot reach {self.endpoint()}: {error.__cause__ or error}") from None
        except LLMError:
            raise
        except Exception as error:  # a cut or garbled transfer (the HTTP library's own errors)
            raise LLMError(f"broken answer from {self.endpoint()}: {type(error).__name__}") from None
        return message_text(bytes(body))


def message_text(body: bytes) -> str:
    """``choices[0].message.content`` of a chat-completions body (text parts joined)."""
    try:
        payload = parse_json(body.decode("utf-8"))
    except ValueError:
        raise LLMError("the answer is not JSON") from None
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMError("the answer has no choices[0].message.content") from None
    if isinstance(content, list):  # content parts
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise LLMError("the answer's message content is not text")
    return content


def image_data_url(image: Image.Image, max_side: int = 1024) -> str:
    image = fit_longest_side(image.convert("RGB"), max_side)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def parse_class_list(text: str, vocabulary: Sequence[str]) -> tuple[list[str], list[str]]:
    """The vocabulary names an answer lists (vocabulary order) and the unknown names it gave.

    Accepts a JSON list (possibly inside a code fence or surrounded by prose), a JSON object
    with a list value (``{"classes": [...]}``), or a comma/semicolon/newline separated list
    (bullets and quotes stripped). Matching is case- and whitespace-insensitive. Linear in
    the answer's length (no backtracking pattern over the whole text).
    """
    items = _items(text if isinstance(text, str) else "")
    lookup = {" ".join(name.split()).casefold(): name for name in vocabulary}
    found: set[str] = set()
    unknown: dict[str, str] = {}  # key → the name as given, first spelling kept: linear, not quadratic
    for item in items:
        key = " ".join(str(item).split()).strip(" .\"'`*-").casefold()
        if not key:
            continue
        if key in lookup:
            found.add(lookup[key])
        else:
            unknown.setdefault(key, str(item).strip())
    return [name for name in vocabulary if name in found], list(unknown.values())


def _fenced(text: str) -> str | None:
    """The body of the first ```` ``` ```` code fence (language tag dropped), if closed."""
    start = text.find("```")
    if start < 0:
        return None
    end = text.find("```", start + 3)
    if end < 0:
        return None
    body = text[start + 3 : end]
    first, newline, rest = body.partition("\n")
    return (rest if newline and first.strip().isalpha() else body).strip()


def _json_value(candidate: str) -> Any:
    try:
        return parse_json(candidate)
    except ValueError:
        return None


def _items(text: str) -> list[str]:
    text = (text or "").strip()
    fenced = _fenced(text)
    candidates = [fenced] if fenced is not None else []
    candidates.append(text)
    first, last = text.find("["), text.rfind("]")
    if 0 <= first < last:
        candidates.append(text[first : last + 1])
    for candidate in candidates:
        value = _json_value(candidate)
        if isinstance(value, dict):
            value = next((v for v in value.values() if isinstance(v, list)), None)
        if isinstance(value, list):
            return [str(v) for v in value if isinstance(v, (str, int, float))]
        if isinstance(value, str):
            text = value
            break
    body = fenced if fenced is not None else text
    body = body.strip().strip("[]")
    parts = re.split(r"[,;\n]", body)
    return [_BULLET.sub("", part, count=1) for part in parts if part.strip()]


_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
