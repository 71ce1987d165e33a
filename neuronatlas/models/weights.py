"""Weights offline first: the one place that knows how to look for them. Every family tries the local
cache, and only goes to the network when it is reachable, so an offline machine gets a one-line
`UserError` in seconds instead of minutes of download retries.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, TypeVar
from urllib.parse import urlparse

from ..errors import UserError

RANDOM_FIX = "or use --random-weights to build the architecture with random weights"

T = TypeVar("T")


# -- weights: cache first, network only when it is there ---------------------------------------------
def offline_requested() -> bool:
    """The user said there is no network (the HF convention, honoured by every family)."""
    return any(os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"}
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NEURONATLAS_OFFLINE"))


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the host of `url`? A proxy setting counts as yes (we cannot
    tell through it, and the library will use it)."""
    if offline_requested():
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    return _connects(urlparse(url).hostname or url, timeout)


@lru_cache(maxsize=None)  # asked once per host and process: an offline probe costs up to `timeout`
def _connects(host: str, timeout: float) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"


@contextmanager
def hub_offline():
    """Make huggingface_hub (used by timm, open_clip and transformers) answer from its cache only."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


@contextmanager
def _quiet():
    """Mute the libraries' ERROR logs of a cache miss we handle (open_clip logs before raising)."""
    before = logging.root.manager.disable
    logging.disable(max(before, logging.ERROR))
    try:
        yield
    finally:
        logging.disable(before)


def missing_weights(spec: str, looked: str, cause: BaseException | None = None) -> UserError:
    why = f" ({type(cause).__name__})" if cause is not None else ""
    return UserError(
        f"no weights for {spec} in {looked} and no network{why}: download them on a machine with "
        f"internet into {looked}, or pass --weights PATH, {RANDOM_FIX}")


def cached_then_online(spec: str, load: Callable[[], T], looked: str, url: str) -> T:
    """`load()` from the cache only; if that fails, again with the network when it is reachable."""
    try:
        with hub_offline(), _quiet():
            return load()
    except UserError:
        raise
    except Exception as e:  # the libraries raise OSError, RuntimeError, LocalEntryNotFoundError...
        first = e
    if not reachable(url):
        raise missing_weights(spec, looked, first) from first
    return load()
