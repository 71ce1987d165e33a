"""An OpenAI-compatible chat-completions client over plain HTTP (stdlib only): vLLM, SGLang, Ollama
(`/v1`), llama.cpp's server and hosted APIs all speak it.

    spec  openai:MODEL[@BASE_URL]      e.g. openai:OpenGVLab/InternVL2_5-8B@http://127.0.0.1:8000/v1
    base URL: the spec's, else $OPENAI_BASE_URL, else https://api.openai.com/v1
    key:      $OPENAI_API_KEY (or the variable named by api_key_env=); none is sent when unset

Request: POST {base}/chat/completions with {"model", "messages", "max_tokens", "temperature"};
images are `{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}` parts.
Reply: choices[0].message.content; usage.prompt_tokens / completion_tokens (0 when absent).
429, 5xx, timeouts and connection errors are retried (see ChatClient); Retry-After is honoured
(seconds or an HTTP date). Other 4xx are the user's to fix and fail at once with the server's message.
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
from .chat import ChatClient, ChatError, ChatRequest, ChatResponse, ImagePart, TransientError

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
                 timeout: float = 120.0, **kwargs):
        if not model:
            raise UserError("openai: needs a model name, e.g. openai:gpt-4o-mini or "
                            "openai:MODEL@http://127.0.0.1:8000/v1")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise UserError(f"openai base URL must start with http:// or https:// (got "
                            f"{self.base_url}), e.g. openai:{model}@http://127.0.0.1:8000/v1")
        self.api_key_env, self.timeout = api_key_env, timeout
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
                payload = json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code == 429 or exc.code >= 500:
                raise TransientError(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After")))
            hint = (f"; set ${self.api_key_env}" if exc.code in (401, 403) else
                    "; check the model name (GET /models lists them)" if exc.code == 404 else "")
            raise ChatError(f"{self.name} refused the request: HTTP {exc.code} "
                            f"{' '.join(detail.split())}{hint}") from None
        except (TimeoutError, socket.timeout) as exc:
            raise TransientError(f"timeout after {self.timeout}s") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise TransientError(f"timeout after {self.timeout}s") from exc
            raise TransientError(f"cannot connect to {self.base_url} ({exc.reason})") from exc
        except (ConnectionError, http.client.HTTPException) as exc:
            raise TransientError(f"connection error ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise TransientError(f"reply is not JSON ({exc})") from exc
        try:
            text = payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ChatError(f"{self.name} replied without choices[0].message.content: "
                            f"{json.dumps(payload)[:200]}") from None
        usage = payload.get("usage") or {}
        return ChatResponse(text, int(usage.get("prompt_tokens") or 0),
                            int(usage.get("completion_tokens") or 0))


def load(arg: str, **kwargs) -> OpenAIChatClient:
    """`MODEL[@BASE_URL]`; the model name may itself contain '/', the URL is after the last '@'."""
    model, sep, url = arg.rpartition("@")
    if not sep or "://" not in url:
        model, url = arg, None
    return OpenAIChatClient(model, url, **kwargs)
