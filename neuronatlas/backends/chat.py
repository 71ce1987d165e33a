"""Chat / VLM clients: one small interface for every way of asking a (vision-)language model.

    client = load_chat_client("openai:Qwen/Qwen2-VL-7B-Instruct@http://127.0.0.1:8000/v1")
    reply = client.chat(ChatRequest.user("Describe this image.", [pil_image]))
    reply.text; client.usage.snapshot()   # prompt/completion tokens, requests, cache hits, retries

Specs (`load_chat_client`):
    openai:MODEL[@BASE_URL]    an OpenAI-compatible chat-completions server (vLLM, SGLang, Ollama,
                               hosted APIs); key from $OPENAI_API_KEY (or api_key_env=)
    hf-vlm:PATH                a local transformers AutoModelForImageTextToText + AutoProcessor
    zoo:world-llava            the embedded world-llava (offline)

Every client shares what `ChatClient.chat` does around the model call:
- a persistent response cache (SQLite, `ResponseCache`) keyed by the client's `model_id` (which
  names the weights), the messages (texts and the SHA-256 of each image's PNG bytes) and the
  generation parameters: a repeated request never reaches the model again, so an interrupted
  labelling run resumes for free;
- a concurrency limit (a semaphore held only during model calls; `chat_many` runs a thread pool);
- retries with exponential backoff and full jitter on `TransientError` (429, 5xx, timeouts,
  connection errors), honouring the server's Retry-After; how many: max_retries= or
  $NEURONATLAS_CHAT_MAX_RETRIES (default 6); a server's timeout: timeout= or
  $NEURONATLAS_CHAT_TIMEOUT (seconds, default 120);
- two kinds of failure: `ChatError` (nothing can be asked: retries exhausted, bad key, unknown
  model) and its subclass `RequestFailed` (this request got no usable answer: a malformed or empty
  reply, a content filter), which callers record against the one unit and go on;
- token accounting (`Usage`): prompt and completion tokens from each response, summed.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import os
import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..errors import UserError


# -- messages ------------------------------------------------------------------------------------
class ImagePart:
    """An image in a message, held as PNG bytes (what is sent, and what the cache key hashes)."""

    __slots__ = ("png", "sha256")

    def __init__(self, png: bytes):
        self.png = png
        self.sha256 = hashlib.sha256(png).hexdigest()

    @classmethod
    def from_pil(cls, image) -> "ImagePart":
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        return cls(buf.getvalue())

    def to_pil(self):
        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as im:
            return im.convert("RGB")

    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


@dataclass(frozen=True)
class Message:
    role: str  # system, user, assistant
    content: tuple  # of str and ImagePart, in order

    def texts(self) -> list[str]:
        return [c for c in self.content if isinstance(c, str)]

    def images(self) -> list[ImagePart]:
        return [c for c in self.content if isinstance(c, ImagePart)]


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    max_tokens: int = 512
    temperature: float = 0.0

    @classmethod
    def user(cls, text: str, images: Iterable = (), system: str | None = None,
             **params) -> "ChatRequest":
        """One user turn: the images (PIL or ImagePart) first, then the text."""
        parts = tuple(im if isinstance(im, ImagePart) else ImagePart.from_pil(im) for im in images)
        msgs = ((Message("system", (system,)),) if system else ()) + (Message("user", parts + (text,)),)
        return cls(msgs, **params)

    def params(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature}

    def key(self, model_id: str) -> str:
        """The cache key: model + every text + every image's hash + the generation parameters."""
        msgs = [[m.role, [c if isinstance(c, str) else {"image": c.sha256} for c in m.content]]
                for m in self.messages]
        blob = json.dumps({"model": model_id, "messages": msgs, "params": self.params()},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def last_user_text(self) -> str:
        users = [m for m in self.messages if m.role == "user"]
        return "\n".join(users[-1].texts()) if users else ""


@dataclass(frozen=True)
class ChatResponse:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


# -- errors --------------------------------------------------------------------------------------
class TransientError(Exception):
    """A failure worth retrying (429, 5xx, timeout, connection refused); `retry_after` in seconds
    when the server said how long to wait."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ChatError(UserError):
    """The model kept failing (retries exhausted) or refused every request (bad key, unknown
    model): nothing more can be asked until the user fixes it."""


class RequestFailed(ChatError):
    """This one request got no usable answer (a malformed reply, an empty one, a content filter, a
    4xx about this request): the caller records it against its unit and goes on with the others."""


# -- token accounting ----------------------------------------------------------------------------
class Usage:
    """Thread-safe counters: model calls, cache hits, retries and tokens (from each response)."""

    FIELDS = ("requests", "cache_hits", "retries", "prompt_tokens", "completion_tokens")

    def __init__(self):
        self._lock = threading.Lock()
        self._n = dict.fromkeys(self.FIELDS, 0)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                self._n[k] += int(v)

    def snapshot(self) -> dict:
        with self._lock:
            out = dict(self._n)
        out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
        return out

    def __repr__(self) -> str:
        return f"Usage({self.snapshot()})"


# -- the response cache --------------------------------------------------------------------------
class ResponseCache:
    """SQLite table key -> (model, text, prompt_tokens, completion_tokens). Safe to share between
    threads (one lock) and processes (SQLite's own locking; writes wait up to 30 s)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, "
                         "text TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, "
                         "created REAL)")
        self._db.commit()

    def get(self, key: str) -> ChatResponse | None:
        with self._lock:
            row = self._db.execute("SELECT text, prompt_tokens, completion_tokens FROM responses "
                                   "WHERE key = ?", (key,)).fetchone()
        return None if row is None else ChatResponse(row[0], row[1], row[2], cached=True)

    def put(self, key: str, model: str, response: ChatResponse) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                             (key, model, str(response.text), int(response.prompt_tokens),
                              int(response.completion_tokens), time.time()))
            self._db.commit()  # committed per response: a crash loses at most the one in flight

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- retries -------------------------------------------------------------------------------------
MAX_RETRIES_ENV = "NEURONATLAS_CHAT_MAX_RETRIES"
TIMEOUT_ENV = "NEURONATLAS_CHAT_TIMEOUT"


def env_number(name: str, default, kind=float, minimum=0):
    """A number from the environment variable `name` (default when unset), with a one-line error."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise UserError(f"${name}={raw!r} is not a {'whole ' if kind is int else ''}number >= "
                        f"{minimum}: set it to e.g. {default}, or unset it")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: wait uniform(0, min(max_delay, base * 2**attempt)),
    or the server's Retry-After (capped at max_delay) when it sent one. `from_env()` reads
    max_retries from $NEURONATLAS_CHAT_MAX_RETRIES (default 6)."""

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    @classmethod
    def from_env(cls, max_retries: int | None = None) -> "RetryPolicy":
        if max_retries is None:
            max_retries = env_number(MAX_RETRIES_ENV, cls.max_retries, int)
        if max_retries < 0:
            raise UserError(f"--max-retries must be 0 or more (got {max_retries})")
        return cls(max_retries=max_retries)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt))


# -- the client interface ------------------------------------------------------------------------
class ChatClient:
    """Base class. Subclasses set `name` (the spec) and `model_id` (names model + weights, part of
    every cache key) and implement `_complete(request) -> ChatResponse`, raising TransientError for
    failures worth retrying."""

    name: str = "chat"
    model_id: str = "chat"
    reads_text_only: bool = True  # can answer a request without images (e.g. summarise captions)

    def __init__(self, concurrency: int = 4, cache: str | Path | ResponseCache | None = None,
                 retry: RetryPolicy | None = None, seed: int = 0, max_retries: int | None = None,
                 timeout: float | None = None):
        if concurrency < 1:
            raise UserError(f"concurrency must be at least 1 (got {concurrency})")
        self.concurrency = concurrency
        self.retry = retry if retry is not None else RetryPolicy.from_env(max_retries)
        # seconds one request may take, for clients that ask a server ($NEURONATLAS_CHAT_TIMEOUT)
        self.timeout = float(timeout) if timeout is not None else \
            env_number(TIMEOUT_ENV, 120.0, float, minimum=0.001)
        if self.timeout <= 0:
            raise UserError(f"--timeout must be more than 0 seconds (got {timeout})")
        self.usage = Usage()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.cache = None
        self.set_cache(cache)

    def set_cache(self, cache: str | Path | ResponseCache | None) -> None:
        self.cache = cache if isinstance(cache, ResponseCache) or cache is None else \
            ResponseCache(cache)

    def _complete(self, request: ChatRequest) -> ChatResponse:
        raise NotImplementedError

    def describe(self) -> dict:
        """What a labels config records about the client."""
        return {"spec": self.name, "model_id": self.model_id}

    def chat(self, request: ChatRequest) -> ChatResponse:
        key = request.key(self.model_id)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.usage.add(cache_hits=1)
                return hit
        response = self._with_retries(request)
        self.usage.add(requests=1, prompt_tokens=response.prompt_tokens,
                       completion_tokens=response.completion_tokens)
        if self.cache is not None:
            self.cache.put(key, self.model_id, response)
        return response

    def _with_retries(self, request: ChatRequest) -> ChatResponse:
        attempt = 0
        while True:
            try:
                with self._slots:  # the concurrency limit covers model calls only, not the waits
                    return self._complete(request)
            except TransientError as exc:
                if attempt >= self.retry.max_retries:
                    raise ChatError(f"{self.name} kept failing ({exc}) after {attempt + 1} tries: "
                                    f"check the server, then rerun the same command (finished "
                                    f"answers are cached and are not asked again)") from None
                with self._rng_lock:
                    wait = self.retry.delay(attempt, exc.retry_after, self._rng)
                self.usage.add(retries=1)
                attempt += 1
                time.sleep(wait)

    def chat_many(self, requests: list[ChatRequest],
                  on_result: Callable[[int, ChatResponse], None] | None = None,
                  failed: str = "raise") -> list[ChatResponse]:
        """Answers in request order, `concurrency` at a time; `on_result(i, response)` is called as
        each completes. The first error is raised once the requests already started have finished
        (their answers are cached). With failed="keep", a `RequestFailed` takes that request's place
        in the list instead (the others are still asked); other errors are raised as before."""
        out: list[ChatResponse | None] = [None] * len(requests)
        keep = failed == "keep"
        if len(requests) <= 1 or self.concurrency == 1:
            for i, r in enumerate(requests):
                try:
                    out[i] = self.chat(r)
                except RequestFailed as exc:
                    if not keep:
                        raise
                    out[i] = exc
                    continue
                if on_result:
                    on_result(i, out[i])
            return out
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            futures = {pool.submit(self.chat, r): i for i, r in enumerate(requests)}
            error = None
            try:
                for f in as_completed(futures):
                    try:
                        out[futures[f]] = f.result()
                    except RequestFailed as exc:
                        if keep:
                            out[futures[f]] = exc
                            continue
                        error = error or exc
                        cancel_pending(futures)
                        continue
                    except Exception as exc:  # keep the others' answers (cached), then re-raise
                        error = error or exc
                        cancel_pending(futures)
                        continue
                    if on_result:
                        on_result(futures[f], out[futures[f]])
            except BaseException:  # Ctrl-C: start nothing new
                cancel_pending(futures)
                raise
            if error is not None:
                raise error
        return out


def cancel_pending(futures) -> None:
    """Cancel the futures not yet started. Future.cancel() leaves them queued, so a worker skips
    each one and notifies as_completed (shutdown(cancel_futures=True) would drop them unnoticed
    and an as_completed loop over them would wait forever)."""
    for f in futures:
        f.cancel()


# -- loading -------------------------------------------------------------------------------------
CHAT_CLIENTS: dict[str, str] = {
    "openai": "neuronatlas.backends.openai_http:load",
    "hf-vlm": "neuronatlas.backends.hf_vlm:load",
    "zoo": "neuronatlas.backends.world_llava:load",
}
EXAMPLES = "openai:MODEL@http://127.0.0.1:8000/v1, hf-vlm:PATH, zoo:world-llava"


def is_chat_spec(spec: str) -> bool:
    family, _, arg = str(spec).partition(":")
    return family in ("openai", "hf-vlm") or (family == "zoo" and arg == "world-llava")


def load_chat_client(spec: str | ChatClient, **kwargs) -> ChatClient:
    """A client from a spec (see the module docstring); kwargs (concurrency, cache, retry, ...) go
    to the client. A ChatClient passes through."""
    if isinstance(spec, ChatClient):
        return spec
    family, sep, arg = str(spec).partition(":")
    if not sep or family not in CHAT_CLIENTS or not arg or (family == "zoo" and arg != "world-llava"):
        raise UserError(f"unknown chat/VLM client '{spec}': use one of {EXAMPLES} (the zoo's only "
                        f"VLM is zoo:world-llava)")
    module, func = CHAT_CLIENTS[family].split(":")
    return getattr(importlib.import_module(module), func)(arg, **kwargs)


__all__ = ["CHAT_CLIENTS", "ChatClient", "ChatError", "ChatRequest", "ChatResponse", "ImagePart",
           "Message", "RequestFailed", "ResponseCache", "RetryPolicy", "TransientError", "Usage",
           "is_chat_spec", "load_chat_client"]
