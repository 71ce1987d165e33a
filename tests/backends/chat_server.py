"""A real local HTTP server that speaks the OpenAI chat-completions protocol, for the client tests.

It listens on 127.0.0.1 (a free port), accepts POST /v1/chat/completions, checks the request's
shape, and answers deterministically from what it was sent:
- an image + "Is there a X?"  -> "yes" when the colour word X covers >= 3% of the image, else "no";
- an image (any other prompt) -> "a picture with COLOURS" (the world colours covering >= 3% of the
  pixels, most first): a crude but honest captioner;
- text only (a summary prompt) -> "FINAL SUMMARY: ... LABEL: W", W the most frequent colour word;
and reports usage (prompt_tokens = words of the texts + 100 per image; completion_tokens = words
of the reply). It counts requests, measures the maximum number in flight, and plays a script of
faults: "429" (with Retry-After), "500", "timeout" (sleeps `timeout_sleep` s before answering), or
from request `fail_from` on, 500 for everything (a dead backend). A fault may also be a malformed
HTTP-200 reply: bytes (sent as the body as they are) or a dict (sent as the JSON body); `rule(body)`,
when set, picks such a fault (or None) from the request itself, so one unit's requests can fail
whatever order they arrive in.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from neuronatlas.data.world.vocab import COLORS

PALETTE = np.array([c.rgb for c in COLORS], np.float64)
NAMES = [c.name for c in COLORS]


def colours(image: Image.Image, share: float = 0.03) -> list[str]:
    px = np.asarray(image.convert("RGB"), np.float64).reshape(-1, 3)
    d = ((px[:, None, :] - PALETTE[None]) ** 2).sum(-1)
    near = d.min(1) < 45.0 ** 2
    counts = Counter(np.array(NAMES)[d.argmin(1)[near]].tolist())
    return [c for c, n in counts.most_common() if n >= share * len(px)]


class ChatServer:
    def __init__(self, delay: float = 0.0, retry_after: str = "0.2", timeout_sleep: float = 1.5):
        self.delay, self.retry_after, self.timeout_sleep = delay, retry_after, timeout_sleep
        self.faults: list[str] = []
        self.fail_from: int | None = None
        self.rule = None  # request body -> fault or None
        self.requests = 0  # every POST received, faulty ones included
        self.answered = 0  # 200 replies
        self.in_flight = self.max_in_flight = 0
        self.prompt_tokens = self.completion_tokens = 0  # over the 200 replies
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _send(self, h, code: int, payload, headers: dict | None = None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            h.send_response(code)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            # out of flight before the reply leaves: a client that has the reply may send its next
            # request at once, and must not find this handler still counted
            self._leave(h)
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def _leave(self, h):
        with self.lock:
            if getattr(h, "counted", False):
                h.counted = False
                self.in_flight -= 1

    def handle(self, h):
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        h.counted = True
        with self.lock:
            self.requests += 1
            n = self.requests
            fault = self.faults.pop(0) if self.faults else None
            if fault is None and self.rule is not None:
                fault = self.rule(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.bodies.append(body)
        try:
            if self.delay:
                time.sleep(self.delay)
            if h.path != "/v1/chat/completions":
                return self._send(h, 404, {"error": {"message": f"no route {h.path}"}})
            if fault == "429":
                return self._send(h, 429, {"error": {"message": "rate limited"}},
                                  {"Retry-After": self.retry_after})
            if fault == "500" or (self.fail_from is not None and n >= self.fail_from):
                return self._send(h, 500, {"error": {"message": "internal error"}})
            if isinstance(fault, (bytes, dict)):  # a malformed HTTP-200 reply
                return self._send(h, 200, fault)
            if fault == "timeout":
                time.sleep(self.timeout_sleep)
            if not isinstance(body.get("model"), str) or not body.get("messages"):
                return self._send(h, 400, {"error": {"message": "model and messages required"}})
            texts, images = [], []
            for m in body["messages"]:
                content = m["content"]
                if isinstance(content, str):
                    texts.append(content)
                    continue
                for part in content:
                    if part["type"] == "text":
                        texts.append(part["text"])
                    else:
                        url = part["image_url"]["url"]
                        assert url.startswith("data:image/png;base64,"), url[:40]
                        images.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
            reply = self.answer(" ".join(texts), images)
            prompt = sum(len(t.split()) for t in texts) + 100 * len(images)
            completion = len(reply.split())
            if fault != "timeout":  # the client gave up on a timed-out request: not its tokens
                with self.lock:
                    self.answered += 1
                    self.prompt_tokens += prompt
                    self.completion_tokens += completion
            self._send(h, 200, {"id": f"cmpl-{n}", "object": "chat.completion", "model": body["model"],
                                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                    "role": "assistant", "content": reply}}],
                                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                          "total_tokens": prompt + completion}})
        finally:
            self._leave(h)

    @staticmethod
    def answer(text: str, images: list) -> str:
        if images:
            found = [c for im in images for c in colours(im)]
            q = re.search(r"is there an? ([^?]+)\?", text, re.I)
            if q:
                return "yes" if any(w in found for w in q.group(1).lower().split()) else "no"
            return "a picture with " + " and ".join(dict.fromkeys(found) or ["nothing"])
        words = Counter(w for w in re.findall(r"[a-z]+", text.lower()) if w in NAMES)
        top = words.most_common(1)[0][0] if words else "nothing"
        return f"FINAL SUMMARY: The images share the colour {top}.\nLABEL: {top}"
