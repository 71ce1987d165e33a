"""The OpenAI-compatible client against a real local server replying in every bad way (issue 19,
points 6 and 8): each malformed HTTP-200 reply is a `RequestFailed` of that request alone (one line,
what was wrong), odd but usable replies are read, the cache never sees a bad row, and the timeout
and retries come from options or the environment."""

import json
import time

import pytest
from PIL import Image

from neuronatlas.backends.chat import (ChatError, ChatRequest, RequestFailed, ResponseCache,
                                       RetryPolicy, load_chat_client)
from neuronatlas.errors import UserError
from tests.backends.chat_server import ChatServer

FAST = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.1)


@pytest.fixture
def server():
    with ChatServer() as s:
        yield s


def client(server, tmp_path, **kw):
    kw.setdefault("retry", FAST)
    return load_chat_client(f"openai:test/vlm@{server.url}", cache=tmp_path / "c.sqlite", **kw)


def ok(content, **extra):
    return {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}], **extra}


RED = Image.new("RGB", (16, 16), (220, 30, 30))

BAD = [  # (reply body, what the one-line error says)
    (b"\xff\xfe not utf-8 \xc3\x28", "not UTF-8"),
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    (b'{"choices": [{"message": {"content": "trunc', "not JSON"),
    ({"choices": []}, r"without choices\[0\]\.message\.content"),
    ({"id": "x"}, r"without choices\[0\]\.message\.content"),
    ({"choices": [{"message": {}}]}, r"without choices\[0\]\.message\.content"),
    ({"choices": ["text"]}, r"without choices\[0\]\.message\.content"),
    (b"[1, 2, 3]", r"without choices\[0\]\.message\.content"),
    (ok(42), "neither text nor a list"),
    (ok({"text": "a dict"}), "neither text nor a list"),
    (ok([1, 2]), "neither text nor a list"),
    ({"choices": [{"finish_reason": "content_filter", "message": {"content": ""}}]},
     "content_filter"),
]


@pytest.mark.parametrize("body, says", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_a_malformed_reply_fails_that_request_alone(server, tmp_path, body, says):
    c = client(server, tmp_path)
    server.faults = [body]
    with pytest.raises(RequestFailed, match=says) as err:
        c.chat(ChatRequest.user("Describe.", [RED]))
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert server.requests == 1  # not retried: the same reply would come back
    assert len(ResponseCache(tmp_path / "c.sqlite")) == 0  # nothing bad is cached
    again = c.chat(ChatRequest.user("Describe.", [RED]))  # asked again, answered, cached
    assert again.text == "a picture with red" and not again.cached


USABLE = [  # odd replies that still carry an answer: (reply body, text, prompt, completion tokens)
    (ok([{"type": "text", "text": "a red "}, {"type": "text", "text": "square"}]), "a red square",
     0, 0),
    (ok(["part one, ", "part two"]), "part one, part two", 0, 0),
    (ok([{"type": "image_url", "image_url": {}}, {"type": "text", "text": "red"}]), "red", 0, 0),
    (ok("fine", usage={"prompt_tokens": "many", "completion_tokens": None}), "fine", 0, 0),
    (ok("fine", usage={"prompt_tokens": "12", "completion_tokens": 3.0}), "fine", 12, 3),
    (ok("fine", usage="n/a"), "fine", 0, 0),
    (ok(None), "", 0, 0),
]


@pytest.mark.parametrize("body, text, pt, ct", USABLE, ids=[f"odd{i}" for i in range(len(USABLE))])
def test_odd_but_usable_replies_are_read_and_cached(server, tmp_path, body, text, pt, ct):
    c = client(server, tmp_path)
    server.faults = [body]
    r = c.chat(ChatRequest.user("Describe.", [RED]))
    assert (r.text, r.prompt_tokens, r.completion_tokens) == (text, pt, ct)
    hit = client(server, tmp_path).chat(ChatRequest.user("Describe.", [RED]))
    assert hit.cached and hit.text == text and server.requests == 1


def test_4xx_about_the_request_fail_it_alone_and_key_errors_stop_everything(server, tmp_path):
    c = client(server, tmp_path)
    c.model = 7  # sends "model": 7
    with pytest.raises(RequestFailed, match="HTTP 400"):
        c.chat(ChatRequest.user("Describe.", [RED]))
    wrong = load_chat_client(f"openai:m@{server.url}/nope", retry=FAST)
    with pytest.raises(ChatError, match="HTTP 404") as err:
        wrong.chat(ChatRequest.user("hi"))
    assert not isinstance(err.value, RequestFailed)


def test_timeout_and_retries_are_options_and_environment_variables(server, tmp_path, monkeypatch):
    server.timeout_sleep = 1.0
    server.faults = ["timeout"] * 10
    c = client(server, tmp_path, retry=None, max_retries=1, timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(ChatError, match=r"timeout after 0.2s.*after 2 tries"):
        c.chat(ChatRequest.user("Describe.", [RED]))
    assert time.monotonic() - t0 < 0.2 * 2 + 1.0  # two short timeouts, not 120 s each
    assert server.requests == 2
    monkeypatch.setenv("NEURONATLAS_CHAT_TIMEOUT", "0.3")
    monkeypatch.setenv("NEURONATLAS_CHAT_MAX_RETRIES", "0")
    e = load_chat_client(f"openai:m@{server.url}")
    assert (e.timeout, e.retry.max_retries) == (0.3, 0)
    with pytest.raises(ChatError, match=r"timeout after 0.3s.*after 1 tries"):
        e.chat(ChatRequest.user("Describe.", [RED]))
    # an option beats the environment; nonsense in either is one line
    assert load_chat_client(f"openai:m@{server.url}", timeout=5, max_retries=3).timeout == 5
    monkeypatch.setenv("NEURONATLAS_CHAT_TIMEOUT", "soon")
    with pytest.raises(UserError, match="NEURONATLAS_CHAT_TIMEOUT='soon' is not a number"):
        load_chat_client(f"openai:m@{server.url}")
    monkeypatch.delenv("NEURONATLAS_CHAT_TIMEOUT")
    with pytest.raises(UserError, match="--timeout must be more than 0"):
        load_chat_client(f"openai:m@{server.url}", timeout=0)
    with pytest.raises(UserError, match="--max-retries must be 0 or more"):
        load_chat_client(f"openai:m@{server.url}", max_retries=-1)


def test_chat_many_can_keep_failed_requests_in_place(server, tmp_path):
    c = client(server, tmp_path, concurrency=3)
    server.rule = lambda body: {"choices": []} if "bad" in json.dumps(body) else None
    reqs = [ChatRequest.user(f"Describe {w}.", [RED]) for w in ("one", "bad", "two", "bad!", "x")]
    out = c.chat_many(reqs, failed="keep")
    assert [type(o).__name__ for o in out] == ["ChatResponse", "RequestFailed", "ChatResponse",
                                               "RequestFailed", "ChatResponse"]
    with pytest.raises(RequestFailed):
        c.chat_many(reqs)  # the default: the first failure is raised (answers stay cached)
