"""The atlas server answers only to the host names it is meant to be reached by.

A page on any web site can make the browser send requests to 127.0.0.1 under that site's own name
(DNS rebinding: evil.example resolves to 127.0.0.1 a moment after the page loaded), and then read the
answers as same-origin. The Host header of such a request still says evil.example, so the server
refuses every request whose Host is not a loopback name, the address it was bound to, or a name
given with `--allow-host` (a name, or `*.example.org` for its subdomains). The refusal is a 400 with
one line saying how to allow the name.
"""

from __future__ import annotations

import ipaddress
import json

LOOPBACK = ("localhost", "127.0.0.1", "::1")


def host_name(header: str) -> str:
    """The name of a Host header without its port: 'a.b:80' -> 'a.b', '[::1]:8765' -> '::1'."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.index("]")] if "]" in h else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def allowed_hosts(bind: str | None = None, extra=()) -> tuple[str, ...]:
    """Loopback names, the bound address unless it is a wildcard one, and `extra`."""
    names = list(LOOPBACK)
    if bind and bind not in ("0.0.0.0", "::", ""):
        names.append(host_name(bind) if not _is_ipv6(bind) else bind.strip("[]").lower())
    for item in extra:
        names += [n.strip().lower() for n in str(item).split(",") if n.strip()]
    return tuple(dict.fromkeys(names))


def _is_ipv6(s: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(s.strip("[]")), ipaddress.IPv6Address)
    except ValueError:
        return False


def is_allowed(name: str, allowed) -> bool:
    if name.endswith(".localhost") or name in allowed:
        return True
    try:
        if ipaddress.ip_address(name).is_loopback:  # 127.0.0.2, ...
            return True
    except ValueError:
        pass
    return any(a.startswith("*.") and name.endswith(a[1:]) for a in allowed)


class HostCheck:
    """ASGI middleware: a 400 for any HTTP request whose Host header is not allowed."""

    def __init__(self, app, allowed):
        self.app, self.allowed = app, tuple(allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            raw = headers.get(b"host", b"").decode("latin-1")
            name = host_name(raw)
            if not is_allowed(name, self.allowed):
                body = json.dumps({"error": f"this atlas does not answer to the host name "
                                            f"'{name or '(none)'}': restart it with --allow-host "
                                            f"{name or 'NAME'} to allow that name"}).encode()
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
