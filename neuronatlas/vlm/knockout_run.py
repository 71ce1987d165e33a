"""`neuronatlas vlm knockout`: attention knockout over a probe set with object masks (the world),
written to RUN/vlm/knockout/NAME/ (neuronatlas.run.vlm).

For every object the model answers right on the clean image (the questions of ablation_run: polling
and VQA, judged on the next token), block attention from a source set to a destination set in a
window of layers and answer again:
- sources:      object patches + buffer b ("object-b"), every image token but the object's with a
                buffer of 1 ("non-object"), the image rows but the last ("rows-but-last");
- destinations: the last token ("last"), the last image row ("last-row"), the question's tokens
                ("question": text tokens after the first, i.e. not <bos>);
- windows:      knockout.windows (early / mid / late thirds, early-mid, mid-late, all) or --windows.
Tables: images.parquet (one row per object x setting x source x destination x window) and
summary.parquet (accuracy and mean drop of the answer token's probability per configuration);
profile.png (accuracy per window, object -> last token).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from ..data import open_probe
from ..errors import UserError
from ..run.vlm import ExperimentStore
from .ablation import object_tokens
from .ablation_run import probe_items, question, right
from .answers import greedy
from .knockout import block_matrix, knocked_out, parse_windows, windows
from .subject import VlmSubject, language_parts

SOURCES = ("object", "non-object", "rows-but-last")
DESTINATIONS = ("last", "last-row", "question")


@dataclass(frozen=True)
class KnockoutConfig:
    settings: tuple[str, ...] = ("vqa",)
    sources: tuple[str, ...] = SOURCES
    destinations: tuple[str, ...] = DESTINATIONS
    buffers: tuple[int, ...] = (0, 1)
    windows: str | None = None  # "NAME=LO-HI,..."; None: thirds + overlaps + all
    polling: str | None = None
    seed: int = 0
    batch_size: int = 16
    limit: int | None = None

    def __post_init__(self):
        for what, got, allowed in (("setting", self.settings, ("polling", "vqa")),
                                   ("source", self.sources, SOURCES),
                                   ("destination", self.destinations, DESTINATIONS)):
            bad = [g for g in got if g not in allowed]
            if bad:
                raise UserError(f"unknown {what} {bad[0]!r}: choose from {', '.join(allowed)}")

    def to_json(self) -> dict:
        return asdict(self)


def source_sets(subject: VlmSubject, cfg: KnockoutConfig, mask) -> list[tuple[str, list[int]]]:
    """(name, image-feature indices) of every source of one object."""
    g, cls = subject.grid, int(subject.has_cls)
    out = []
    if "object" in cfg.sources:
        out += [(f"object-{b}", object_tokens(subject, mask, b)) for b in cfg.buffers]
    if "non-object" in cfg.sources:
        near = set(object_tokens(subject, mask, 1))
        out.append(("non-object", [k for k in range(subject.n_image_tokens) if k not in near]))
    if "rows-but-last" in cfg.sources:
        out.append(("rows-but-last", [cls + p for p in range(g * (g - 1))]))
    return out


def destinations(subject: VlmSubject, cfg: KnockoutConfig, ids_T: torch.Tensor, n_real: int):
    """(name, sequence positions) of every destination of one prompt row."""
    img = subject.image_positions(ids_T[None])[0]
    g, cls = subject.grid, int(subject.has_cls)
    out = []
    if "last" in cfg.destinations:
        out.append(("last", [n_real - 1]))
    if "last-row" in cfg.destinations:
        out.append(("last-row", img[cls + g * (g - 1):cls + g * g].tolist()))
    if "question" in cfg.destinations:
        is_text = torch.ones(n_real, dtype=torch.bool)
        is_text[img] = False
        is_text[0] = False
        out.append(("question", torch.nonzero(is_text).flatten().tolist()))
    return out


def knockout_batch(subject, cfg, probe, indices, wins) -> list[dict]:
    pix = {i: subject.transform(probe.read_image(i)) for i in indices}
    items = [it for i in indices for it in probe_items(subject, probe, i)]
    rows: list[dict] = []
    for setting in cfg.settings:
        qs = [(it, question(subject, cfg, setting, it)) for it in items]
        qs = [(it, q) for it, q in qs if q is not None]
        if not qs:
            continue
        pixels = torch.stack([pix[it.index] for it, _ in qs])
        targets = [q[2] for _, q in qs]
        clean = greedy(subject, pixels, [q[0] for _, q in qs], 1, targets=targets)
        jobs = []
        for j, (it, q) in enumerate(qs):
            ok = right(setting, clean.text[j], clean.first_token[j], q[1], it)
            base = dict(index=it.index, object=it.obj, name=it.name, setting=setting, prompt=q[0],
                        expected=q[1], clean_answer=clean.first_token[j], clean_right=ok,
                        clean_prob=float(clean.target_prob[j]))
            rows.append(dict(base, source="none", destination="none", window="none", n_blocked=0,
                             answer=clean.first_token[j], right=ok, prob=float(clean.target_prob[j])))
            if not ok:
                continue
            inputs = subject.inputs(pix[it.index][None], [q[0]])
            ids, n_real = inputs["input_ids"][0], int(inputs["attention_mask"][0].sum())
            img = subject.image_positions(ids[None])[0]
            for sname, feats in source_sets(subject, cfg, it.mask):
                src = img[torch.as_tensor(feats, dtype=torch.long)].tolist() if feats else []
                for dname, dst in destinations(subject, cfg, ids, n_real):
                    for wname, layers in wins.items():
                        jobs.append((base, it, q, targets[j], sname, src, dname, dst, wname, layers))
        by_window: dict[str, list] = {}
        for job in jobs:
            by_window.setdefault(job[8], []).append(job)
        for wname, wjobs in by_window.items():  # one set of hooked layers per forward
            for s in range(0, len(wjobs), 4 * cfg.batch_size):
                chunk = wjobs[s:s + 4 * cfg.batch_size]
                px = torch.stack([pix[c[1].index] for c in chunk])

                def intervention(inputs, chunk=chunk):
                    t = inputs["input_ids"].shape[1]
                    block = block_matrix(t, [c[5] for c in chunk], [c[7] for c in chunk])
                    return knocked_out(subject, block, chunk[0][9])

                ans = greedy(subject, px, [c[2][0] for c in chunk], 1, intervention,
                             targets=[c[3] for c in chunk])
                for j, (base, it, q, _t, sname, src, dname, dst, wn, layers) in enumerate(chunk):
                    rows.append(dict(base, source=sname, destination=dname, window=wn,
                                     n_blocked=len(src) * len(dst), answer=ans.first_token[j],
                                     right=right(setting, ans.text[j], ans.first_token[j], q[1], it),
                                     prob=float(ans.target_prob[j])))
    return rows


def summary(df, wins):
    inc = df[df.clean_right & (df.source != "none")].copy()
    inc["drop"] = inc.clean_prob - inc.prob
    out = inc.groupby(["setting", "source", "destination", "window"], sort=False).agg(
        accuracy=("right", "mean"), n=("right", "size"), prob_drop=("drop", "mean")).reset_index()
    out["layers"] = out.window.map(lambda w: ",".join(map(str, wins[w])))
    return out


def plot_profile(summ, wins, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(wins)
    for (setting, src, dst), g in summ.groupby(["setting", "source", "destination"]):
        if dst != "last":
            continue
        g = g.set_index("window").reindex(names)
        ax.plot(names, g.accuracy, marker="o", label=f"{setting}: {src} -> last")
    ax.set_ylabel("accuracy on initially-right objects")
    ax.set_xlabel("knocked-out layer window")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_knockout(subject: VlmSubject, data: str, out, cfg: KnockoutConfig = KnockoutConfig(),
                 name: str = "default", show_progress: bool = True) -> ExperimentStore:
    import pandas as pd

    probe = open_probe(data)
    if len(probe) == 0:
        raise UserError(f"probe set {data} is empty")
    n_layers = len(language_parts(subject.model).layers)
    wins = parse_windows(cfg.windows, n_layers) if cfg.windows else windows(n_layers)
    n = len(probe) if cfg.limit is None else min(cfg.limit, len(probe))
    store = ExperimentStore(out, "knockout", name)
    store.create_or_verify(dict(format="neuronatlas-vlm-knockout", key=dict(
        model=subject.name, data=probe.fingerprint(), config=cfg.to_json()), data_spec=data,
        windows=wins, status="computing", created=time.time()))
    starts = list(range(0, n, cfg.batch_size))
    todo = [(p, s) for p, s in enumerate(starts) if not store.part_path(p).exists()]
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts), initial=len(starts) - len(todo), desc="knockout", unit="batch")
    for part, s in todo:
        rows = knockout_batch(subject, cfg, probe, list(range(s, min(s + cfg.batch_size, n))), wins)
        store.write_part(part, pd.DataFrame(rows))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    df = store.read_parts()
    store.write_table("images", df)
    summ = summary(df, wins)
    store.write_table("summary", summ)
    plot_profile(summ, wins, store.plot_path("profile"))
    store.update_meta(status="complete", n_images=n, summary=summ.to_dict("records"))
    return store
