"""`second-order`: labels from the sparse text decomposition of each neuron's second-order PC.

    neuronatlas lens second-order MODEL --layer L --data SOURCE --out RUN   # the PCs (neuronatlas.lens)
    neuronatlas describe RUN --method second-order [--concepts words20k]    # these labels

For every neuron with second-order effects in RUN (every layer computed, or `layer=`), the first
principal component of its effects (a unit vector in CLIP's joint space) is decomposed by OMP (or the
positive lasso) over unit-norm text embeddings of the concept set from the same CLIP's text encoder
(neuronatlas.describe.text_decomposition). Labels: rank 0 = the largest coefficient; score = the coefficient
(OMP's can be negative: "not this text"; they come last); extras `cosine` and `relative_residual`
say how well the terms rebuild the PC. Default text set: words20k (world-clip: the world's
concepts, the only words its tokenizer knows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Any, Literal, opt
from .base import LabelerConfig, Labels, labeler


def second_order_results(path, layers=None) -> list:
    """The finished second-order results of RUN: every layer, or those named (hook names, or a
    block index / suffix that names one)."""
    from ..errors import UserError
    from ..run import open_second_order, second_order_layers

    found = second_order_layers(path)
    if not found:
        raise UserError(f"{path} has no second-order effects: compute them first with `neuronatlas "
                        f"lens second-order MODEL --layer L --data SOURCE --out {path}`")
    if isinstance(layers, str):
        layers = [layers]
    return [open_second_order(path, name) for name in (layers or found)]


def label_neurons(path, layers=None, concepts=None, solver: str = "omp", n_terms: int = 32,
                  alpha: float = 1e-3, center: bool = True, scorer=None, progress: bool = True):
    """(labels table, config) for every neuron of the second-order results in `path`. `scorer`: the
    CLIP whose text encoder embeds the concepts (default: the model the effects came from)."""
    from ..backends.scorer import load_scorer
    from ..concepts import load_concepts
    from .text_decomposition import (DecomposeConfig, decompose_neurons, default_text_set, model_of,
                                  text_dictionary)

    results = second_order_results(path, layers)
    if scorer is None:
        _, scorer = model_of(results[0])
    elif isinstance(scorer, str):
        scorer = load_scorer(scorer)
    concepts = load_concepts(concepts or default_text_set(scorer))
    cfg = DecomposeConfig(method=solver, n_terms=n_terms, alpha=alpha, center=center)
    dictionary = text_dictionary(scorer, concepts, center=center, cache_dir=Path(path),
                                 progress=progress)
    df = decompose_neurons(results, dictionary, cfg, progress=progress)
    config = {"decomposition": cfg.to_json(), "concepts": concepts.describe(),
              "n_atoms": len(dictionary), "n_merged_texts": dictionary.n_merged,
              "layers": [r.layer for r in results], "model": results[0].meta["key"]["model"],
              "scorer": getattr(scorer, "name", str(scorer))}
    return df, config


@dataclass(frozen=True)
class SecondOrderLabelsConfig(LabelerConfig):
    layers: tuple[str, ...] | None = opt(None, "Comma-separated layers with second-order effects "
                                               "(default: every one in RUN).")
    concepts: Any = opt(None, "Text set: words20k (default; world-clip: world), words10k, "
                              "imagenet, world, or a text file with one text per line.")
    top: int = opt(32, "Terms per neuron (OMP's number of atoms).")
    solver: Literal["omp", "lasso"] = opt("omp", "omp (orthogonal matching pursuit) or lasso "
                                                 "(non-negative lasso).")
    alpha: float = opt(1e-3, "Lasso penalty (with --solver lasso).")
    center: bool = opt(True, "Subtract the mean text embedding before normalising each atom.")
    text_encoder: Any = opt(None, "The CLIP (scorer spec) whose text encoder embeds the concepts "
                                  "(default: the model the effects came from).")
    progress: bool = opt(True, "Show progress bars.")

    @classmethod
    def from_options(cls, **options):
        if "scorer" in options:  # the name describe_second_order took
            options["text_encoder"] = options.pop("scorer")
        return super().from_options(**options)

    def validate(self) -> None:
        if self.top < 1:
            raise self.error("top", "must be at least 1")
        if self.alpha <= 0:
            raise self.error("alpha", "must be > 0")


def _has_effects(run) -> bool:
    from ..run import second_order_layers

    return bool(second_order_layers(getattr(run, "path", run)))


@labeler("second-order", SecondOrderLabelsConfig, available=_has_effects, recorded=False)
def describe_second_order(run, config: SecondOrderLabelsConfig) -> Labels:
    """The labeler: decompose the stored second-order effects of RUN (a run, or any directory the
    lens wrote its effects into)."""
    c = config
    df, info = label_neurons(run.path, c.layers, c.concepts, c.solver, c.top, c.alpha, c.center,
                             c.text_encoder, c.progress)
    return Labels(df, info)


def stored_or_new_labels(path, layers=None, scorer=None, concepts=None, progress: bool = True):
    """The second-order labels of RUN's neurons: the stored ones when they cover every unit of the
    layers asked for, else computed now (default settings) and stored (other layers' labels stay)."""
    from ..run import read_labels
    from . import describe

    results = second_order_results(path, layers)
    units = {u for r in results for u in r.units}
    df = read_labels(path, "second-order")
    if df is not None and units <= set(df["unit"]):
        return df[df["unit"].isin(units)]
    return describe(path, "second-order", layers=[r.layer for r in results], concepts=concepts,
                    scorer=scorer, progress=progress, keep_other_units=True)
