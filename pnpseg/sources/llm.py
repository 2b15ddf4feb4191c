"""A minimal OpenAI-compatible chat-completions client (standard library only).

Used by the ``llm`` class source: the image goes as a base64 ``data:`` URL, the model is
asked which names of the vocabulary are visible, and the answer is parsed leniently. Nothing
is sent anywhere unless a user selects that source.
"""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from pnpseg.errors import PnpsegError
from pnpseg.method.resize import fit_longest_side

ENV_BASE_URL = "PNPSEG_LLM_BASE_URL"
ENV_MODEL = "PNPSEG_LLM_MODEL"
ENV_API_KEY = "PNPSEG_LLM_API_KEY"

PROMPT = (
    "Which of the following classes are visible in this image? Classes: {classes}.\n"
    "Answer with a JSON list of the visible class names, spelled exactly as given, "
    'for example ["{example}"]. Answer with the JSON list only.'
)


class LLMError(PnpsegError):
    """The endpoint could not be reached, refused the request, or answered nonsense."""


@dataclass
class LLMClient:
    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    max_side: int = 1024  # images are downscaled to this longest side before sending

    def endpoint(self) -> str:
        url = self.base_url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"

    def ask(self, image: Image.Image, vocabulary: Sequence[str]) -> str:
        """Send the image and the question; return the assistant's text (raises LLMError)."""
        prompt = PROMPT.format(classes=", ".join(vocabulary), example=vocabulary[0] if vocabulary else "cat")
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {"type": "image_url", "image_url": {"url": image_data_url(image, self.max_side)}},
                    ],
                }
            ],
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.endpoint(), json.dumps(body).encode("utf-8"), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            raise LLMError(f"HTTP {error.code} from {self.endpoint()}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            raise LLMError(f"cannot reach {self.endpoint()}: {getattr(error, 'reason', error)}") from None
        except ValueError:
            raise LLMError(f"{self.endpoint()} did not answer JSON") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError("the answer has no choices[0].message.content") from None
        if isinstance(content, list):  # content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            raise LLMError("the answer's message content is not text")
        return content


def image_data_url(image: Image.Image, max_side: int = 1024) -> str:
    image = fit_longest_side(image.convert("RGB"), max_side)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def parse_class_list(text: str, vocabulary: Sequence[str]) -> tuple[list[str], list[str]]:
    """The vocabulary names an answer lists (vocabulary order) and the unknown names it gave.

    Accepts a JSON list (possibly inside a code fence or surrounded by prose), a JSON object
    with a list value (``{"classes": [...]}``), or a comma/semicolon/newline separated list
    (bullets and quotes stripped). Matching is case- and whitespace-insensitive.
    """
    items = _items(text)
    lookup = {" ".join(name.split()).casefold(): name for name in vocabulary}
    found, unknown = set(), []
    for item in items:
        key = " ".join(str(item).split()).strip(" .\"'`*-").casefold()
        if not key:
            continue
        if key in lookup:
            found.add(lookup[key])
        elif key not in {u.casefold() for u in unknown}:
            unknown.append(str(item).strip())
    return [name for name in vocabulary if name in found], unknown


def _items(text: str) -> list[str]:
    text = (text or "").strip()
    fenced = _FENCE.search(text)
    candidates = [fenced.group(1).strip()] if fenced else []
    candidates.append(text)
    match = re.search(r"\[.*\]", text, re.S)
    if match:
        candidates.append(match.group(0))
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            value = next((v for v in value.values() if isinstance(v, list)), None)
        if isinstance(value, list):
            return [str(v) for v in value if isinstance(v, (str, int, float))]
        if isinstance(value, str):
            text = value
            break
    body = fenced.group(1) if fenced else text
    body = body.strip().strip("[]")
    parts = re.split(r"[,;\n]", body)
    return [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", part) for part in parts if part.strip()]
