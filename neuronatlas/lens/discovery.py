"""Per-image concept discovery: which concepts does CLIP see in this image?

Two readings, both over the same unit-norm text dictionary as the neuron labels:
- `from_neurons`: the neurons whose centred second-order effect on this image is significant (norm
  above the neuron's threshold, the 100th-largest norm over the probe set) vote with the words of
  their decompositions, each word weighted by coefficient x the effect's norm; the words with the
  largest total come first. (The reference notebook sorted the vectors instead of these totals.)
- `from_embedding`: the image embedding itself, sparsely decomposed (OMP or positive lasso).
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..describe.text_decomposition import DecomposeConfig, Decomposition, TextDictionary, decompose


def from_neurons(norms_N: np.ndarray, thresholds_N: np.ndarray, neuron_terms: list, top: int = 10
                 ) -> list[tuple[str, float]]:
    """(word, score) of the image's significant neurons' words, highest score first.

    `norms_N`: the image's centred effect norm per neuron; `thresholds_N`: each neuron's significance
    threshold; `neuron_terms[i]`: neuron i's decomposition [(text, coef), ...]."""
    norms, thr = np.asarray(norms_N, np.float64), np.asarray(thresholds_N, np.float64)
    if norms.shape != thr.shape or len(neuron_terms) != len(norms):
        raise UserError(f"{len(norms)} effect norms, {len(thr)} thresholds and {len(neuron_terms)} "
                        f"neuron decompositions: they must describe the same neurons")
    score: dict[str, float] = {}
    for i in np.flatnonzero(norms >= thr):
        for text, coef in neuron_terms[i]:
            score[text] = score.get(text, 0.0) + float(coef) * float(norms[i])
    return sorted(score.items(), key=lambda ts: (-ts[1], ts[0]))[:top]


def significant_neurons(norms_N: np.ndarray, thresholds_N: np.ndarray) -> np.ndarray:
    """Indices of the neurons significant for this image, by norm / threshold (largest first)."""
    norms, thr = np.asarray(norms_N, np.float64), np.asarray(thresholds_N, np.float64)
    idx = np.flatnonzero(norms >= thr)
    ratio = norms[idx] / np.where(thr[idx] > 0, thr[idx], 1)
    return idx[np.argsort(-ratio, kind="stable")]


def from_embedding(embedding_D: np.ndarray, dictionary: TextDictionary,
                   config: DecomposeConfig = DecomposeConfig(n_terms=10)) -> Decomposition:
    """The image embedding decomposed over the text dictionary."""
    return decompose(np.asarray(embedding_D), dictionary, config)


def discover_from_run(path, images: list[int], top: int = 10, layers=None, concepts=None,
                      progress: bool = True) -> list[dict]:
    """For each probe image index: the concepts of its significant neurons (over every layer with
    second-order effects in RUN, or `layers`) and of its embedding's decomposition."""
    import torch

    from ..data import open_probe
    from ..describe.second_order import second_order_results, stored_or_new_labels
    from ..describe.text_decomposition import model_of, neuron_terms, text_dictionary

    results = second_order_results(path, layers)
    n_images = results[0].norms.shape[0]
    bad = [i for i in images if not 0 <= i < n_images]
    if bad:
        raise UserError(f"image index {bad[0]} is out of range: the second-order effects cover "
                        f"{n_images} images (0..{n_images - 1})")
    _, scorer = model_of(results[0])
    labels = stored_or_new_labels(path, [r.layer for r in results], scorer=scorer, progress=progress)
    units = [u for r in results for u in r.units]
    terms = neuron_terms(labels, units)
    thr = np.concatenate([np.asarray(r.threshold) for r in results])
    dictionary = text_dictionary(scorer, concepts, cache_dir=path, progress=progress)
    probe = open_probe(results[0].meta["probe"]["spec"])
    out = []
    for i in images:
        norms = np.concatenate([np.asarray(r.norms[i]) for r in results])
        with torch.no_grad():
            pix = scorer.preprocess(probe.read_image(int(i)))[None].to(scorer.device)
            emb = scorer.encode_images(pix).float().cpu().numpy()[0]
        dec = from_embedding(emb, dictionary, DecomposeConfig(n_terms=top))
        sig = significant_neurons(norms, thr)
        item = probe.items[int(i)]
        out.append({"image": int(i), "image_id": item.image_id, "label": item.label,
                    "neuron_concepts": from_neurons(norms, thr, terms, top),
                    "n_significant": int(len(sig)),
                    "top_neurons": [units[j] for j in sig[:10]],
                    "embedding_concepts": dec.terms, "embedding_cosine": dec.cosine})
    return out

