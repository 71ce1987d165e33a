"""The study report: rater agreement, per-layer % interpretable / % polysemantic, controls vs real
units, and how close people's descriptions are to each automatic method's labels.

    STUDY/report/agreement.{parquet,csv}   per field: items with >= 2 answers, mean pairwise % and
                                           kappa, Krippendorff's alpha (nominal; ordinal + interval
                                           for the 1-5 ratings)
    STUDY/report/pairwise.{parquet,csv}    per field and pair of annotators: n, %, kappa
    STUDY/report/layers.{parquet,csv}      per layer and group (real / control): rates with 95%
                                           Wilson intervals, mean ratings; layers.png plots them
    STUDY/report/controls.{parquet,csv}    real vs control over all layers (+ Fisher's exact p)
    STUDY/report/methods.{parquet,csv}     per method: cosine(description, the unit's label) vs
                                           cosine with the labels of the layer's other units
    STUDY/report/report.md, report.html

Label agreement uses a text embedder (zoo:minilm). Raw MiniLM cosines of unrelated phrases are
0.3-0.5, so each description's matched cosine is also ranked among its cosines with the same method's
labels of the other exported units of that layer: `rank_auc` 0.5 is chance, 1.0 means the unit's own
label is always the closest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from .inter_rater import fisher_exact, krippendorff_alpha, pairwise
from .schema import RATINGS

FIELDS = {  # field -> (kappa weights, categories, alpha metrics)
    "interpretable": (None, [False, True], ("nominal",)),
    "polysemantic": (None, [False, True], ("nominal",)),
    "feature_type": (None, None, ("nominal",)),
    **{r: ("quadratic", [1, 2, 3, 4, 5], ("ordinal", "interval")) for r in RATINGS},
}


def load_study(study: str | Path):
    import pandas as pd

    study = Path(study)
    if not (study / "annotations.parquet").exists():
        raise UserError(f"{study} holds no imported study: run `neuronatlas study import "
                        f"RESPONSES --mapping MAPPING --out {study}` first")
    return pd.read_parquet(study / "annotations.parquet"), json.loads((study / "study.json").read_text())


def _matrix(df, field: str) -> tuple[np.ndarray, list[str]]:
    wide = df.pivot(index="annotator", columns="id", values=field)
    raters = list(wide.index)
    rows = [[None if _na(v) else (bool(v) if field in ("interpretable", "polysemantic") else v)
             for v in wide.loc[r]] for r in raters]
    return np.array(rows, dtype=object), raters


def _na(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def agreement_tables(df):
    import pandas as pd

    summary, pairs = [], []
    for field, (weights, cats, metrics) in FIELDS.items():
        m, raters = _matrix(df, field)
        answered = (~np.vectorize(_na)(m)).sum(0) if m.size else np.zeros(0)
        pw = pairwise(m, raters, weights, cats)
        pw.insert(0, "field", field)
        pairs.append(pw)
        row = {"field": field, "n_raters": len(raters), "n_items": int((answered >= 2).sum()),
               "percent": float(np.average(pw["percent"], weights=pw["n"])) if pw["n"].sum() else
               float("nan"),
               "kappa": float(pw["kappa"].mean()) if pw["kappa"].notna().any() else float("nan"),
               "kappa_weights": weights or "none"}
        numeric = _code(m, cats)
        for metric in ("nominal", "ordinal", "interval"):
            row[f"alpha_{metric}"] = krippendorff_alpha(numeric, metric) if metric in metrics \
                else float("nan")
        summary.append(row)
    return pd.DataFrame(summary), pd.concat(pairs, ignore_index=True)


def _code(m: np.ndarray, cats) -> np.ndarray:
    if cats is None:  # nominal strings: any coding will do
        codes: dict = {}
        return np.array([[np.nan if _na(v) else codes.setdefault(v, len(codes)) for v in row]
                         for row in m], dtype=float)
    return np.array([[np.nan if _na(v) else float(v) for v in row] for row in m], dtype=float)


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def _rates(g) -> dict:
    out = {"n_grids": int(g["id"].nunique()), "n_answers": len(g)}
    for field in ("interpretable", "polysemantic"):
        vals = g[field].dropna().astype(bool)
        k, n = int(vals.sum()), len(vals)
        lo, hi = wilson(k, n)
        out.update({f"{field}_n": n, field: k / n if n else float("nan"), f"{field}_lo": lo,
                    f"{field}_hi": hi})
    for r in RATINGS:
        out[f"mean_{r}"] = float(g[r].dropna().astype(float).mean()) if g[r].notna().any() \
            else float("nan")
    return out


def layer_table(df, layer_order: list[str] | None = None):
    import pandas as pd

    rows = []
    for (layer, control), g in df.groupby(["layer", "control"], sort=False):
        rows.append({"layer": layer, "group": "control" if control else "real", **_rates(g)})
    out = pd.DataFrame(rows)
    order = layer_order or sorted(out["layer"].unique())
    out["_l"] = out["layer"].map({l: i for i, l in enumerate(order)})
    return out.sort_values(["_l", "group"], ascending=[True, False]).drop(columns="_l") \
        .reset_index(drop=True)


def control_table(df):
    import pandas as pd

    rows = [{"group": "control" if c else "real", **_rates(g)}
            for c, g in df.groupby("control", sort=True)]
    out = pd.DataFrame(rows).sort_values("group", ascending=False).reset_index(drop=True)
    out["fisher_p_interpretable"] = float("nan")
    if set(out["group"]) == {"real", "control"}:
        t = [[int(round(r.interpretable * r.interpretable_n)),
              int(r.interpretable_n - round(r.interpretable * r.interpretable_n))]
             for r in out.itertuples()]
        out["fisher_p_interpretable"] = fisher_exact(t)
    return out


def plot_layers(layers, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = layers[layers.group == "real"]
    ctrl = layers[layers.group == "control"]
    names = list(dict.fromkeys(real["layer"]))
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 0.9 * len(names) + 3) * 1.6, 3.6), squeeze=False)
    for ax, field, title in zip(axes[0], ("interpretable", "polysemantic"),
                                ("% interpretable", "% polysemantic")):
        r = real.set_index("layer").reindex(names)
        err = np.stack([r[field] - r[f"{field}_lo"], r[f"{field}_hi"] - r[field]]) * 100
        ax.bar(x, r[field] * 100, width=0.6, yerr=err, capsize=3, color="#4477aa", label="units")
        if len(ctrl):
            ctrl_all = ctrl[f"{field}_n"].sum()
            pooled = (ctrl[field] * ctrl[f"{field}_n"]).sum() / ctrl_all if ctrl_all else np.nan
            ax.axhline(pooled * 100, color="#cc6677", ls="--", label="controls (all layers)")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_xlim(-0.8, len(names) - 0.2)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- human descriptions vs automatic labels -------------------------------------------------------
def method_table(df, run, embedder):
    """Per method (and `truth` when the run knows its units' true labels)."""
    import pandas as pd

    real = df[(~df["control"]) & df["description"].notna()]
    labels = run.labels()
    top = labels[labels["rank"] == 0][["unit", "method", "label"]]
    if "truth" in run.units.columns:
        t = run.units[["unit", "truth"]].dropna().rename(columns={"truth": "label"})
        top = pd.concat([top, t.assign(method="truth")], ignore_index=True)
    top = top[top["unit"].isin(set(df.loc[~df["control"].astype(bool), "unit"]))]
    if real.empty or top.empty:
        return pd.DataFrame(columns=["method", "n", "cosine", "cosine_other", "rank_auc"])
    texts = sorted(set(real["description"]) | set(top["label"].astype(str)))
    vec = dict(zip(texts, embedder.embed(texts).numpy()))
    rows = []
    for method, g in top.groupby("method", sort=True):
        label_of = dict(zip(g["unit"], g["label"].astype(str)))
        layer_of = run.units.set_index("unit")["layer"]
        matched, other, aucs = [], [], []
        for r in real.itertuples():
            if r.unit not in label_of:
                continue
            d = vec[r.description]
            own = float(d @ vec[label_of[r.unit]])
            rest = [float(d @ vec[l]) for u, l in label_of.items()
                    if u != r.unit and layer_of.get(u) == r.layer]
            matched.append(own)
            if rest:
                rest = np.array(rest)
                other.append(float(rest.mean()))
                aucs.append(float((rest < own).mean() + 0.5 * (rest == own).mean()))
        rows.append({"method": method, "n": len(matched),
                     "cosine": float(np.mean(matched)) if matched else float("nan"),
                     "cosine_other": float(np.mean(other)) if other else float("nan"),
                     "rank_auc": float(np.mean(aucs)) if aucs else float("nan")})
    return pd.DataFrame(rows)


def human_baseline(df, embedder) -> float:
    """Mean cosine between two annotators' descriptions of the same real grid: a ceiling for how
    close any label can get."""
    real = df[(~df["control"]) & df["description"].notna()]
    pairs = [(a, b) for _, g in real.groupby("id") for i, a in enumerate(g["description"])
             for b in list(g["description"])[i + 1:]]
    if not pairs:
        return float("nan")
    texts = sorted({t for p in pairs for t in p})
    vec = dict(zip(texts, embedder.embed(texts).numpy()))
    return float(np.mean([vec[a] @ vec[b] for a, b in pairs]))


# -- the whole report -----------------------------------------------------------------------------
def study_report(study: str | Path, run=None, embedder="zoo:minilm") -> dict:
    """Compute every table, write them with the plot and report.md / report.html under
    STUDY/report, and return the tables by name."""
    from ..run import Run, open_run, write_table

    study = Path(study)
    df, meta = load_study(study)
    out = study / "report"
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    run_obj = None
    run_path = run if run is not None else meta.get("run")
    if isinstance(run_path, Run):
        run_obj = run_path
    elif run_path and Path(run_path).exists():
        run_obj = open_run(run_path)
    else:
        notes.append(f"the run {run_path} was not found: pass --run to compare with its labels")
    tables = {}
    tables["agreement"], tables["pairwise"] = agreement_tables(df)
    tables["layers"] = layer_table(df, list(run_obj.layers) if run_obj else None)
    tables["controls"] = control_table(df)
    human = float("nan")
    if run_obj is not None:
        try:
            if isinstance(embedder, str):
                from ..backends.text import load_text_embedder

                embedder = load_text_embedder(embedder)
            tables["methods"] = method_table(df, run_obj, embedder)
            human = human_baseline(df, embedder)
        except UserError as exc:
            notes.append(f"label agreement skipped: {exc}")
    for name, t in tables.items():
        write_table(out, name, t)
        t.to_csv(out / f"{name}.csv", index=False)
    plot_layers(tables["layers"], out / "layers.png")
    _write_documents(out, meta, tables, human, notes,
                     getattr(embedder, "name", str(embedder)))
    return tables


def _fmt(t) -> str:
    return t.to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else \
        "```\n" + t.to_string(index=False, float_format=lambda v: f"{v:.3g}") + "\n```"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def _write_documents(out: Path, meta: dict, tables: dict, human: float, notes: list[str],
                     embedder_name: str) -> None:
    import html as H

    parts = [("Study", f"{meta['n_responses']} answers from {len(meta['annotators'])} annotators "
                       f"({', '.join(meta['annotators'])}) on {meta['n_items']} grids, "
                       f"{meta['n_controls']} of them controls. Run: `{meta['run']}`.")]
    parts.append(("Agreement between annotators", tables["agreement"]))
    parts.append(("Per layer", tables["layers"]))
    parts.append(("Plot", "![per-layer rates](layers.png)"))
    parts.append(("Controls vs real units", tables["controls"]))
    if "methods" in tables:
        parts.append((f"Human descriptions vs automatic labels ({embedder_name} cosine)",
                      tables["methods"]))
        parts.append(("Human vs human", f"mean cosine between two annotators' descriptions of "
                                        f"the same grid: {human:.3f}"))
    if notes:
        parts.append(("Notes", "\n".join(f"- {n}" for n in notes)))
    md = ["# Study report", ""]
    page = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Study report</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto}table{border-"
            "collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}</style>"
            "</head><body><h1>Study report</h1>"]
    for title, body in parts:
        md += [f"## {title}", "", body if isinstance(body, str) else _fmt(body), ""]
        page.append(f"<h2>{H.escape(title)}</h2>")
        if isinstance(body, str):
            if body.startswith("!["):
                page.append("<img src='layers.png' alt='per-layer rates'>")
            else:
                page.append("<p>" + H.escape(body).replace("\n", "<br>") + "</p>")
        else:
            page.append(body.to_html(index=False, float_format=lambda v: f"{v:.3g}",
                                     na_rep="", border=0))
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    (out / "report.html").write_text("\n".join(page) + "</body></html>", encoding="utf-8")
