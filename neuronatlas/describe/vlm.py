"""VLM auto-interpretation (`--method vlm`): show a unit's top exemplars to a vision-language model
and turn what it says into a label. The pipeline of vit-human-interp / CLIP_AUDIT (prior-art §1):

- mode "captions" (the reference's mode B): caption each of the unit's top-k exemplars
  (prompts/caption.txt), then summarise the captions into a label, either with an LLM
  (`llm=SPEC`, prompts/summarize.txt: FINAL SUMMARY + LABEL) or, when no LLM is configured, with
  the offline summariser (`summarize.py`: activation-weighted consensus of caption phrases minus
  their frequency in captions of `n_background` random probe images), which ranks several labels;
- mode "grid" (mode A): one request with the exemplars composed into one grid image
  (prompts/grid.txt, which states the true number of images; the reference's said 16 for 20).

Exemplars are plain probe images or carry the unit's heatmap (`heatmap=True`; vlm_images.py).
Stored as method `vlm` (captions) or `vlm-grid`; extras columns: mode, summarizer (which
summariser made the label: `offline:weighted-phrases` or `llm:SPEC`, or `vlm:SPEC` for grid),
description (the LLM's summary / the VLM's grid answer), captions (JSON list, strongest exemplar
first), heatmap, n_exemplars. The config records the clients, prompt hashes and token usage.

Resume: every answer is cached (RUN/cache/chat.sqlite, keyed by model + prompt + image hashes +
parameters) and every finished unit is appended to RUN/labels/.partial/ (run.LabelProgress); a
rerun after an interruption asks only what is missing.

Failures: a request that gets no usable answer (`RequestFailed`: a malformed or empty reply, a
content filter) fails its unit alone, recorded with the reason; the other units go on and the labels
of every finished unit are written. The failed units are listed in the config (`failed`) and by the
CLI, and asked again only with `retry_failed=True` (`--retry-failed`). An error no request can get
past (the server down after every retry, a bad key) stops the run; finished units stay saved.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backends.chat import ChatClient, ChatRequest, RequestFailed, cancel_pending, load_chat_client
from ..config import Any, Literal, opt
from ..errors import UserError
from .base import LabelerConfig, Labels, labeler
from .prompts import fingerprint, load_prompts, render
from .summarize import NAME as OFFLINE_SUMMARIZER, summarize_captions
from .vlm_images import compose_grid, unit_tiles

MODES = ("captions", "grid")


def parse_label(text: str) -> tuple[str, str]:
    """(label, description) from an answer with optional `FINAL SUMMARY:` and `LABEL:` lines.
    Without a LABEL line the label is the first sentence (at most 12 words); "no common..." answers
    become the label "no common theme"; an empty answer "no description"."""
    text = str(text or "").strip()
    m = re.search(r"FINAL SUMMARY:\s*(.+?)(?=\n\s*LABEL:|\Z)", text, re.I | re.S)
    description = " ".join((m.group(1) if m else text).split())
    lab = re.search(r"^\s*\**LABEL\**:\s*(.+)$", text, re.I | re.M)
    if lab:
        label = re.sub(r"^[\s*\"'`]+|[\s*\"'`.]+$", "", lab.group(1))
    elif re.search(r"\bno (common|commonalit)", text, re.I):
        label = "no common theme"
    else:
        first = re.split(r"(?<=[.!?])\s|\n", description, maxsplit=1)[0].rstrip(".")
        label = " ".join(first.split()[:12])
    return (label or "no description"), description


def _client(spec, concurrency: int, cache, **limits) -> ChatClient | None:
    if spec is None:
        return None
    limits = {k: v for k, v in limits.items() if v is not None}  # timeout, max_retries
    client = load_chat_client(spec, concurrency=concurrency, cache=cache, **limits) \
        if not isinstance(spec, ChatClient) else spec
    if isinstance(spec, ChatClient) and client.cache is None and cache is not None:
        client.set_cache(cache)
    return client


def _units(run, layers, units, max_units) -> list[str]:
    if units is not None:
        units = [units] if isinstance(units, str) else list(units)
        for u in units:
            run.parse_unit(u)  # clear error for a bad id
        return units
    table = run.units
    if layers is not None:
        layers = [layers] if isinstance(layers, str) else list(layers)
        for layer in layers:
            run.parse_unit(f"{layer}:0")
        table = table[table["layer"].isin(layers)]
    out = list(table["unit"])
    return out[:max_units] if max_units is not None else out


def _background_indices(run, n: int, seed: int) -> list[int]:
    ok = run.images.loc[run.images["status"] == "ok", "index"].to_numpy()
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(ok, size=min(n, len(ok)), replace=False))


@dataclass(frozen=True)
class VLMConfig(LabelerConfig):
    vlm: Any = opt(None, "The VLM: openai:MODEL@URL, hf-vlm:PATH, zoo:world-llava (or a "
                         "ChatClient).")
    llm: Any = opt(None, "LLM that summarises captions (default: the offline summariser).")
    mode: Literal[MODES] = opt("captions", "captions (caption each exemplar, then summarise) or "
                                           "grid (one description of the whole grid).")
    k: int = opt(8, "Exemplars shown per unit.")
    heatmap: bool = opt(False, "Exemplars with the unit's heatmap.")
    prompts: Path | None = opt(None, "Directory of prompt overrides.")
    concurrency: int = opt(4, "Requests in flight.")
    layers: tuple[str, ...] | None = opt(None, "Comma-separated layers (default: all).")
    units: tuple[str, ...] | None = opt(None, "Comma-separated unit ids (default: every unit of "
                                              "the layers).")
    max_units: int | None = opt(None, "Describe at most this many units.")
    n_background: int = opt(32, "Random probe images captioned as the offline summariser's "
                                "background.")
    top: int = opt(5, "Labels kept per unit (the offline summariser ranks several).")
    cache: Any = opt(True, "Answer cache: True (RUN/cache/chat.sqlite), a path, or None.",
                     cli=False)
    max_tokens: int = opt(512, "Longest answer, in tokens.")
    tile_size: int = opt(224, "Side of each exemplar in grid mode (pixels).")
    alpha: float = opt(0.45, "Heatmap opacity.")
    probe: Any = opt(None, "Probe set, if it moved since recording.", flag="--data")
    target: Any = opt(None, "The run's model, already loaded (Python only).", cli=False)
    seed: int = opt(0, "Seed of the background images.")
    show_progress: bool = opt(True, "Show a progress bar.")
    retry_failed: bool = opt(False, "Ask the units that failed before (malformed or empty "
                                    "replies) again.")
    timeout: float | None = opt(None, "Seconds one request may take (default "
                                      "$NEURONATLAS_CHAT_TIMEOUT or 120).")
    max_retries: int | None = opt(None, "Retries of a request that fails transiently (default "
                                        "$NEURONATLAS_CHAT_MAX_RETRIES or 6).")

    def validate(self) -> None:
        if self.k < 1:
            raise self.error("k", "(exemplars per unit) must be at least 1")
        if self.concurrency < 1:
            raise self.error("concurrency", "must be at least 1")

    def stored_name(self, method: str) -> str:
        return "vlm-grid" if self.mode == "grid" else method


def _usage(run, name: str) -> str:
    """The usage line (stdout); units that failed are listed on stderr as a warning."""
    import sys

    failures = failed_line(run, name)
    if failures:
        print(f"warning: {failures}", file=sys.stderr)
    return usage_line(run, name)


@labeler("vlm", VLMConfig, report=_usage)
def describe_vlm(run, config: VLMConfig) -> Labels:
    """Label units with a VLM (see the module docstring). vlm / llm: chat client specs
    (openai:MODEL@URL, hf-vlm:PATH, zoo:world-llava) or ChatClient instances. cache: True (the
    run's cache), a path, or None. retry_failed: ask the units that failed before again.
    timeout / max_retries: per request (default $NEURONATLAS_CHAT_TIMEOUT or 120 s,
    $NEURONATLAS_CHAT_MAX_RETRIES or 6). Returns the labels table and the clients, prompts, usage
    and the failed units."""
    c = config
    vlm, llm, mode, k, heatmap, prompts, concurrency = (c.vlm, c.llm, c.mode, c.k, c.heatmap,
                                                        c.prompts, c.concurrency)
    layers, units, max_units, n_background, top, cache = (c.layers, c.units, c.max_units,
                                                          c.n_background, c.top, c.cache)
    max_tokens, tile_size, alpha, probe, target, seed = (c.max_tokens, c.tile_size, c.alpha,
                                                         c.probe, c.target, c.seed)
    show_progress = c.show_progress
    retry_failed, timeout, max_retries = c.retry_failed, c.timeout, c.max_retries
    from ..recording.replay import probe_for_run, target_for_run
    from ..recording.progress import Progress
    from ..run import LabelProgress, chat_cache_path

    if vlm is None:
        raise UserError("--method vlm needs a vision-language model: --vlm zoo:world-llava (offline, "
                        "world probe sets), --vlm hf-vlm:PATH or --vlm openai:MODEL@URL")
    if mode not in MODES:
        raise UserError(f"unknown --mode '{mode}': use captions (caption each exemplar, then "
                        f"summarise) or grid (one description of the whole grid)")
    if k < 1:
        raise UserError(f"k (exemplars per unit) must be at least 1 (got {k})")
    templates = load_prompts(prompts)
    cache = chat_cache_path(run.path) if cache is True else cache
    limits = {"timeout": timeout, "max_retries": max_retries}
    vlm_client = _client(vlm, concurrency, cache, **limits)
    llm_client = _client(llm, concurrency, cache, **limits) if mode == "captions" else None
    if llm_client is not None and not llm_client.reads_text_only:
        raise UserError(f"--llm {llm_client.name} cannot summarise text (it only answers questions "
                        f"about images): leave --llm unset for the offline summariser, or pass an "
                        f"openai: or hf-vlm: model")
    summarizer = (f"llm:{llm_client.name}" if llm_client is not None else OFFLINE_SUMMARIZER) \
        if mode == "captions" else f"vlm:{vlm_client.name}"
    probe = probe_for_run(run, probe)
    if heatmap:
        target = target_for_run(run, target)
    unit_list = _units(run, layers, units, max_units)
    if not unit_list:
        raise UserError(f"no units to describe in {run.path} (check --layers)")

    identity = {"mode": mode, "k": k, "heatmap": heatmap, "alpha": alpha, "tile_size": tile_size,
                "max_tokens": max_tokens, "vlm": vlm_client.model_id,
                "llm": llm_client.model_id if llm_client else None,
                "prompts": fingerprint(templates)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    progress = LabelProgress(run.path, f"vlm-{key}")
    records = progress.read()
    done = {u: r for u, r in records.items() if "failed" not in r}
    failed = {u: r["failed"] for u, r in records.items() if "failed" in r}
    if retry_failed:
        failed = {}
    todo = [u for u in unit_list if u not in done and u not in failed]
    highlight = templates["highlight"] if heatmap else ""
    caption_prompt = render(templates["caption"], highlight=highlight)
    model_lock = threading.Lock()  # the target's hooks and the probe are used by one thread at a time

    def one_unit(unit: str) -> dict:
        with model_lock:
            tiles = unit_tiles(run, unit, k, heatmap, probe, target, alpha)
        rec = {"unit": unit, "indices": [t.index for t in tiles], "values": [t.value for t in tiles],
               "heatmap": bool(tiles) and all(t.heatmap for t in tiles)}
        if not tiles:
            return {**rec, "captions": [], "answer": ""}
        if mode == "grid":
            grid = compose_grid([t.image for t in tiles], tile_size)
            prompt = render(templates["grid"], n=len(tiles), highlight=highlight)
            rec["answer"] = vlm_client.chat(ChatRequest.user(prompt, [grid],
                                                             max_tokens=max_tokens)).text
            return rec
        reqs = [ChatRequest.user(caption_prompt, [t.image], max_tokens=max_tokens) for t in tiles]
        rec["captions"] = [r.text.strip() for r in vlm_client.chat_many(reqs)]
        if llm_client is not None:
            listed = "\n".join(f"{i + 1}. [{v:.4g}] {' '.join(c.split())}"
                               for i, (v, c) in enumerate(zip(rec["values"], rec["captions"])))
            prompt = render(templates["summarize"], n=len(tiles), captions=listed)
            rec["answer"] = llm_client.chat(ChatRequest.user(prompt, max_tokens=max_tokens)).text
        return rec

    background: list[str] = []
    if mode == "captions" and llm_client is None and n_background > 0:
        idx = _background_indices(run, n_background, seed)
        plain = render(templates["caption"], highlight="")  # random images carry no heatmap
        reqs = [ChatRequest.user(plain, [probe.read_image(i).convert("RGB")], max_tokens=max_tokens)
                for i in idx]
        # a background caption that fails is left out (the background is a random sample)
        background = [r.text.strip() for r in vlm_client.chat_many(reqs, failed="keep")
                      if not isinstance(r, RequestFailed)]

    bar = Progress(f"vlm {mode}", len(unit_list), len(unit_list) - len(todo), show_progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo) or 1))) as pool:
            futures = {pool.submit(one_unit, u): u for u in todo}
            error = None
            try:
                for f in as_completed(futures):
                    try:
                        rec = f.result()
                    except RequestFailed as exc:  # this unit alone: record it, go on
                        failed[futures[f]] = str(exc)
                        progress.append({"unit": futures[f], "failed": str(exc)})
                        bar.advance(1)
                        continue
                    except Exception as exc:  # let the running units finish and be saved
                        error = error or exc
                        cancel_pending(futures)
                        continue
                    progress.append(rec)
                    done[rec["unit"]] = rec
                    bar.advance(1)
            except BaseException:  # Ctrl-C: start nothing new; finished units are saved already
                cancel_pending(futures)
                raise
            if error is not None:
                raise error
    finally:
        bar.close()

    failed = {u: failed[u] for u in unit_list if u in failed}
    if not any(u in done for u in unit_list):
        raise UserError(f"no unit could be labelled: all {len(failed)} failed ({_shown(failed)}); "
                        f"fix the model or server, then rerun with --retry-failed")
    df = _table([done[u] for u in unit_list if u in done], mode, summarizer, background, top)
    config = {"mode": mode, "k": k, "heatmap": heatmap, "alpha": alpha, "tile_size": tile_size,
              "max_tokens": max_tokens, "summarizer": summarizer, "vlm": vlm_client.describe(),
              "llm": llm_client.describe() if llm_client else None, "prompts_dir":
              str(prompts) if prompts else None, "prompts": fingerprint(templates),
              "n_background": len(background), "seed": seed, "n_units": len(unit_list),
              "failed": failed,
              "usage": {"vlm": vlm_client.usage.snapshot(),
                        "llm": llm_client.usage.snapshot() if llm_client else None}}
    if not failed:  # with failures the partial file keeps them for --retry-failed
        progress.finish()
    return Labels(df, config)


def _shown(failed: dict, n: int = 3) -> str:
    items = [f"{u}: {why}" for u, why in list(failed.items())[:n]]
    return "; ".join(items) + ("; ..." if len(failed) > n else "")


def failed_line(run, name: str = "vlm") -> str | None:
    """One line naming the units a vlm labelling could not label, or None (what the CLI prints)."""
    from ..run import open_run

    failed = open_run(run).label_config(name).get("failed") or {}
    if not failed:
        return None
    return (f"{len(failed)} units failed and have no {name} label ({_shown(failed)}): rerun "
            f"`neuronatlas describe {run} --method vlm ... --retry-failed` to ask them again")


def _table(records: list[dict], mode: str, summarizer: str, background: list[str], top: int):
    import pandas as pd

    rows = []
    for rec in records:
        base = {"unit": rec["unit"], "mode": mode, "summarizer": summarizer,
                "heatmap": rec["heatmap"], "n_exemplars": len(rec["indices"])}
        caps = json.dumps(rec.get("captions", [])) if mode == "captions" else None
        if mode == "captions" and summarizer == OFFLINE_SUMMARIZER:
            ranked = summarize_captions(rec["captions"], rec["values"], background, top)
            if not ranked:
                rows.append({**base, "rank": 0, "label": "no common phrase", "score": 0.0,
                             "description": None, "captions": caps})
            for r, p in enumerate(ranked):
                rows.append({**base, "rank": r, "label": p.phrase, "score": p.score,
                             "description": None, "captions": caps if r == 0 else None})
            continue
        label, description = parse_label(rec.get("answer", ""))
        rows.append({**base, "rank": 0, "label": label, "score": float("nan"),
                     "description": description, "captions": caps})
    cols = ["unit", "rank", "label", "score", "mode", "summarizer", "description", "captions",
            "heatmap", "n_exemplars"]
    return pd.DataFrame(rows, columns=cols).astype({"rank": "int64", "score": "float64"})


def usage_line(run, name: str = "vlm") -> str:
    """One line of token accounting from a vlm labels config (what the CLI prints)."""
    from ..run import open_run

    usage = open_run(run).label_config(name)["usage"]
    parts = []
    for role in ("vlm", "llm"):
        u = usage.get(role)
        if u:
            parts.append(f"{role}: {u['requests']} requests, {u['cache_hits']} cache hits, "
                         f"{u['retries']} retries, {u['prompt_tokens']} prompt + "
                         f"{u['completion_tokens']} completion tokens")
    return "; ".join(parts)
