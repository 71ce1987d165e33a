"""Chat clients against a real local chat-completions server (tests/backends/chat_server.py)."""

import threading
import time

import pytest
from PIL import Image

from neuronatlas.backends.chat import (ChatError, ChatRequest, ImagePart, ResponseCache, RetryPolicy,
                                       load_chat_client)
from neuronatlas.backends.openai_http import OpenAIChatClient
from neuronatlas.errors import UserError
from tests.backends.chat_server import ChatServer

FAST = RetryPolicy(max_retries=4, base_delay=0.01, max_delay=2.0)


def red(size=16):
    return Image.new("RGB", (size, size), (220, 30, 30))


def blue(size=16):
    return Image.new("RGB", (size, size), (35, 70, 225))


@pytest.fixture
def server():
    with ChatServer() as s:
        yield s


def client(server, tmp_path=None, **kw):
    kw.setdefault("retry", FAST)
    kw.setdefault("cache", tmp_path / "cache.sqlite" if tmp_path else None)
    return load_chat_client(f"openai:test/vlm-1@{server.url}", **kw)


def test_spec_parsing_and_unknown_specs():
    c = load_chat_client("openai:org/model-7b@http://127.0.0.1:9/v1")
    assert (c.model, c.base_url) == ("org/model-7b", "http://127.0.0.1:9/v1")
    for bad in ("gpt4", "nope:x", "openai:", "zoo:world-clip"):
        with pytest.raises(UserError, match="openai:MODEL@"):
            load_chat_client(bad)
    with pytest.raises(UserError, match="http"):
        OpenAIChatClient("m", "ftp://x")


def test_request_reaches_the_server_as_chat_completions(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    c = client(server)
    r = c.chat(ChatRequest.user("Describe this image.", [red(), blue()], system="be brief",
                                max_tokens=77))
    assert r.text == "a picture with red and blue" and not r.cached
    body = server.bodies[0]
    assert body["model"] == "test/vlm-1" and body["max_tokens"] == 77 and body["temperature"] == 0.0
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"] == ImagePart.from_pil(red()).data_url()
    # usage comes from the response: 5 words (system + user) + 2 images; 6 words back
    assert (r.prompt_tokens, r.completion_tokens) == (5 + 200, 6)


def test_retries_429_500_and_timeout_then_succeeds(server):
    server.faults = ["429", "500", "timeout"]
    c = client(server, timeout=0.5)
    t0 = time.time()
    r = c.chat(ChatRequest.user("Describe.", [red()]))
    elapsed = time.time() - t0
    assert r.text == "a picture with red"
    assert server.requests == 4  # three failures, then the answer
    assert c.usage.snapshot()["retries"] == 3 and c.usage.snapshot()["requests"] == 1
    assert elapsed >= 0.2 + 0.5  # waited the Retry-After (0.2 s) and the 0.5 s timeout


def test_retry_after_is_respected(server):
    server.faults, server.retry_after = ["429"], "0.8"
    c = client(server, retry=RetryPolicy(max_retries=2, base_delay=0.001))
    t0 = time.time()
    c.chat(ChatRequest.user("Describe.", [red()]))
    assert time.time() - t0 >= 0.8 and server.requests == 2


def test_backoff_is_exponential_with_full_jitter():
    import random

    p = RetryPolicy(base_delay=1.0, max_delay=10.0)
    rng = random.Random(0)
    draws = [[p.delay(a, None, rng) for _ in range(300)] for a in range(5)]
    for a, d in enumerate(draws):
        cap = min(10.0, 2 ** a)
        assert 0 <= min(d) and max(d) <= cap and max(d) > 0.8 * cap
    assert p.delay(0, 3.5, rng) == 3.5 and p.delay(0, 99, rng) == 10.0


def test_gives_up_with_a_clear_error_and_4xx_fail_at_once(server):
    server.fail_from = 1
    c = client(server, retry=RetryPolicy(max_retries=2, base_delay=0.001))
    with pytest.raises(ChatError, match="kept failing.*HTTP 500.*after 3 tries"):
        c.chat(ChatRequest.user("Describe.", [red()]))
    assert server.requests == 3
    server.fail_from = None
    wrong = load_chat_client(f"openai:m@{server.url}/nope", retry=FAST)
    with pytest.raises(ChatError, match="HTTP 404"):
        wrong.chat(ChatRequest.user("hi"))
    assert server.requests == 4  # not retried


def test_connection_refused_is_retried_then_reported():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    c = load_chat_client(f"openai:m@http://127.0.0.1:{port}/v1",
                         retry=RetryPolicy(max_retries=2, base_delay=0.001))
    with pytest.raises(ChatError, match="cannot connect"):
        c.chat(ChatRequest.user("hi"))
    assert c.usage.snapshot()["retries"] == 2


def test_cache_hits_skip_the_network(server, tmp_path):
    c = client(server, tmp_path)
    req = ChatRequest.user("Describe.", [red()])
    first = c.chat(req)
    assert server.requests == 1
    again = c.chat(ChatRequest.user("Describe.", [red()]))  # an equal request, new objects
    assert again.cached and again.text == first.text and server.requests == 1
    fresh = client(server, tmp_path)  # a new process would see the same SQLite file
    assert fresh.chat(req).cached and server.requests == 1
    assert fresh.usage.snapshot()["cache_hits"] == 1 and fresh.usage.snapshot()["requests"] == 0
    # any change of image, prompt, parameter or model is a miss
    c.chat(ChatRequest.user("Describe.", [blue()]))
    c.chat(ChatRequest.user("Describe!", [red()]))
    c.chat(ChatRequest.user("Describe.", [red()], max_tokens=5))
    load_chat_client(f"openai:other@{server.url}", cache=tmp_path / "cache.sqlite").chat(req)
    assert server.requests == 5
    assert len(ResponseCache(tmp_path / "cache.sqlite")) == 5


def test_concurrency_limit_is_respected(server):
    server.delay = 0.15
    c = client(server, concurrency=3)
    reqs = [ChatRequest.user(f"Describe {i}.", [red()]) for i in range(12)]
    seen = []
    out = c.chat_many(reqs, on_result=lambda i, r: seen.append(i))
    assert len(out) == 12 and sorted(seen) == list(range(12))
    assert server.max_in_flight == 3
    # callers in several threads share the one limit; the server counts a request as in flight
    # until its handler returns, a moment after the client has the reply: let those finish first
    deadline = time.monotonic() + 10
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    server.max_in_flight = 0
    c2 = client(server, concurrency=2)
    threads = [threading.Thread(target=c2.chat, args=(ChatRequest.user(f"x{i}", [red()]),))
               for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert server.max_in_flight == 2


def test_token_accounting_sums_the_responses(server, tmp_path):
    server.faults = ["500"]
    c = client(server, tmp_path, concurrency=2)
    reqs = [ChatRequest.user("Describe this one " * (i + 1), [red()] * (i % 2 + 1)) for i in range(6)]
    c.chat_many(reqs)
    c.chat_many(reqs)  # all cached: no tokens spent
    u = c.usage.snapshot()
    assert u["prompt_tokens"] == server.prompt_tokens == sum(3 * (i + 1) + 100 * (i % 2 + 1)
                                                             for i in range(6))
    assert u["completion_tokens"] == server.completion_tokens
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert (u["requests"], u["cache_hits"], u["retries"]) == (6, 6, 1)
