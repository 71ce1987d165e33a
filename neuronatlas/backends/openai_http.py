"""An OpenAI-compatible chat-completions client over plain HTTP (stdlib only): vLLM, SGLang, Ollama
(`/v1`), llama.cpp's server and hosted APIs all speak it.

    spec  openai:MODEL[@BASE_URL]      e.g. openai:OpenGVLab/InternVL2_5-8B@http://127.0.0.1:8000/v1
    base URL: the spec's, else $OPENAI_BASE_URL, else https://api.openai.com/v1
    key:      $OPENAI_API_KEY (or the variable named by api_key_env=); none is sent when unset

Request: POST {base}/chat/completions with {"model", "messages", "max_tokens", "temperature"};
images are `{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}` parts.
Reply: choices[0].message.content (a string, or a list of parts whose texts are joined);
usage.prompt_tokens / completion_tokens (0 when absent or not numbers).
429, 5xx, timeouts and connection errors are retried (see ChatClient); Retry-After is honoured
(seconds or an HTTP date). The timeout per request is timeout= or $NEURONATLAS_CHAT_TIMEOUT
(default 120 s). 401 / 403 / 404 (key, model) fail at once: no request can succeed. A reply that
cannot be used -- not UTF-8, not JSON, no choices, content that is neither text nor parts, a
content filter -- and 400 / 413 / 422 about this request are `RequestFailed`: that request's error
alone, which the labeler records against its unit.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request

from ..errors import UserError
from .chat import (ChatClient, ChatError, ChatRequest, ChatResponse, ImagePart, RequestFailed,
                   TransientError)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        return max(0.0, when - time.time())


def to_openai_messages(request: ChatRequest) -> list[dict]:
    out = []
    for m in request.messages:
        if all(isinstance(c, str) for c in m.content):
            out.append({"role": m.role, "content": "\n".join(m.content)})
            continue
        parts = [{"type": "image_url", "image_url": {"url": c.data_url()}} if isinstance(c, ImagePart)
                 else {"type": "text", "text": c} for c in m.content]
        out.append({"role": m.role, "content": parts})
    return out


class OpenAIChatClient(ChatClient):
    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 **kwargs):
        if not model:
            raise UserError("openai: needs a model name, e.g. openai:gpt-4o-mini or "
                            "openai:MODEL@http://127.0.0.1:8000/v1")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise UserError(f"openai base URL must start with http:// or https:// (got "
                            f"{self.base_url}), e.g. openai:{model}@http://127.0.0.1:8000/v1")
        self.api_key_env = api_key_env
        self.name = f"openai:{model}@{self.base_url}"
        self.model_id = self.name  # the server names its weights by the model name
        super().__init__(**kwargs)

    def describe(self) -> dict:
        return {"spec": self.name, "model_id": self.model_id, "model": self.model,
                "base_url": self.base_url}

    def _complete(self, request: ChatRequest) -> ChatResponse:
        body = json.dumps({"model": self.model, "messages": to_openai_messages(request),
                           **request.params()}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body,
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code == 429 or exc.code >= 500:
                raise TransientError(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After")))
            detail = " ".join(detail.split())
            if exc.code in (400, 413, 422):  # about this request (too large, bad image...)
                raise RequestFailed(f"{self.name} refused the request: HTTP {exc.code} "
                                    f"{detail}") from None
            hint = (f"; set ${self.api_key_env}" if exc.code in (401, 403) else
                    "; check the model name (GET /models lists them)" if exc.code == 404 else "")
            raise ChatError(f"{self.name} refused the request: HTTP {exc.code} {detail}{hint}") \
                from None
        except (TimeoutError, socket.timeout) as exc:
            raise TransientError(f"timeout after {self.timeout:g}s") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise TransientError(f"timeout after {self.timeout:g}s") from exc
            raise TransientError(f"cannot connect to {self.base_url} ({exc.reason})") from exc
        except (ConnectionError, http.client.HTTPException) as exc:
            raise TransientError(f"connection error ({exc})") from exc
        return self._parse(raw)

    def _parse(self, raw: bytes) -> ChatResponse:
        """The answer of an HTTP-200 body, or RequestFailed saying what is wrong with it."""
        try:
            payload = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestFailed(f"{self.name} replied with a body that is not UTF-8 "
                                f"({exc.reason} at byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise RequestFailed(f"{self.name} replied with a body that is not JSON ({exc.msg} at "
                                f"char {exc.pos}): {_head(raw)}") from None
        try:
            choice = payload["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RequestFailed(f"{self.name} replied without choices[0].message.content (content "
                                f"filters reply so): {_head(json.dumps(payload))}") from None
        text = _content_text(content)
        if text is None:
            raise RequestFailed(f"{self.name} replied with content that is neither text nor a list "
                                f"of text parts: {_head(json.dumps(content))}")
        if not text and isinstance(choice, dict) and choice.get("finish_reason") == "content_filter":
            raise RequestFailed(f"{self.name} withheld the answer (finish_reason content_filter)")
        usage = payload.get("usage") if isinstance(payload, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return ChatResponse(text, _count(usage.get("prompt_tokens")),
                            _count(usage.get("completion_tokens")))


def _head(text, n: int = 160) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."


def _content_text(content) -> str | None:
    """A message's content as text: a string; a list of parts (strings or {"type": "text",
    "text": ...}; other parts, e.g. images, are skipped); None (no text) as ''. Anything else: None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif not isinstance(part, dict):
                return None
        return "".join(texts)
    return None


def _count(value) -> int:
    """A token count as sent, or 0 when it is missing or not a number (accounting only)."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return 0
    return int(n) if n == n and 0 <= n < 1e15 else 0


def load(arg: str, **kwargs) -> OpenAIChatClient:
    """`MODEL[@BASE_URL]`; the model name may itself contain '/', the URL is after the last '@'."""
    model, sep, url = arg.rpartition("@")
    if not sep or "://" not in url:
        model, url = arg, None
    return OpenAIChatClient(model, url, **kwargs)
