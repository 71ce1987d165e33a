"""CLIP-Dissect through `describe()` against the reference's computation (Trustworthy-ML-Lab/
CLIP-dissect at 21e7697), written step by step from its published code with its input conventions:

- target activations from forward hooks, pool mode "avg" (utils.get_activation): a 4-D conv output is
  averaged over H, W; a 2-D output is used as is; float32;
- image and text features from the CLIP model, words without a template (save_activations:
  `clip.tokenize("{}".format(word))`), blank concept lines dropped before embedding;
- utils.get_similarity_from_activations: both L2-normalised, `clip_feats = image @ text.T` (the plain
  cosine, no logit scale), then the similarity function (similarity.py) with its defaults;
- describe_neurons.py: `torch.max(similarities, dim=1)` and `words[id]`, where `words` is the concept
  file split on newlines (blank lines kept).

Inputs of the reference's kind: a torchvision ResNet (random weights: `torchvision:resnet18`), the
layers `layer4` (conv, 512 units) and `fc` (1000 units), 150 probe images (> soft_wpmi's top_k 100), a
trained CLIP-style scorer (`zoo:world-clip`, shipped) and a concept file of one word per line.

Departures on purpose, each shown with its size below: a blank line in the concept file misaligns the
reference's labels (we label with the list that was scored); rank_reorder's NaN for a concept whose
mean similarity over the top images is <= 0 wins the reference's torch.max (we never choose it); its
random baseline makes the reference's scores random (ours use its expectation: same labels).
"""

import math

import numpy as np
import pytest
import torch
import torchvision

import neuronatlas as na
from neuronatlas.describe import describe

from tests.fidelity.common import PROBE, hooked_activations, ranked

SCORER = "zoo:world-clip"
LAYERS = ("layer4", "fc")


# -- the reference's computation -----------------------------------------------------------------
def reference_pool_avg(output: torch.Tensor) -> torch.Tensor:
    if output.dim() == 4:  # CNN layers: spatial mean
        return output.mean(dim=[2, 3])
    if output.dim() == 3:  # ViT: the CLS token only
        return output[:, 0]
    return output  # FC layers


def ref_cos(clip_feats, target_feats):
    clip_feats = clip_feats / clip_feats.norm(p=2, dim=0, keepdim=True)
    target_feats = target_feats / target_feats.norm(p=2, dim=0, keepdim=True)
    return target_feats.T @ clip_feats


def ref_cos_cubed(clip_feats, target_feats, min_norm=1e-3):
    clip_feats = (clip_feats - clip_feats.mean(dim=0, keepdim=True)) ** 3
    target_feats = (target_feats - target_feats.mean(dim=0, keepdim=True)) ** 3
    clip_feats = clip_feats / torch.clip(clip_feats.norm(p=2, dim=0, keepdim=True), min_norm)
    target_feats = target_feats / torch.clip(target_feats.norm(p=2, dim=0, keepdim=True), min_norm)
    return target_feats.T @ clip_feats


def _ref_prior(log_p_d_given_e, lam):
    # log-mean-exp over all units of the layer
    prior = (torch.logsumexp(log_p_d_given_e, dim=0, keepdim=True)
             - torch.log(log_p_d_given_e.shape[0] * torch.ones([1])))
    return log_p_d_given_e - lam * prior


def ref_soft_wpmi(clip_feats, target_feats, top_k=100, a=10, lam=1, min_prob=1e-7, p_start=0.998,
                  p_end=0.97):
    q = torch.softmax(a * clip_feats, dim=1)
    inds = torch.topk(target_feats, dim=0, k=top_k)[1]  # (k, U)
    p_in = (p_start - torch.arange(0, top_k) / top_k * (p_start - p_end)).unsqueeze(1)
    rows = []
    for u in range(target_feats.shape[1]):
        g = q.gather(0, inds[:, u:u + 1].expand(-1, q.shape[1]))  # (k, C): the unit's top images
        rows.append(torch.log(1 + p_in * (g - 1) + min_prob).sum(0, keepdim=True))
    return _ref_prior(torch.cat(rows), lam)


def ref_wpmi(clip_feats, target_feats, top_k=28, a=2, lam=0.6, min_prob=1e-7):
    q = torch.softmax(a * clip_feats, dim=1)
    inds = torch.topk(target_feats, dim=0, k=top_k)[1]
    rows = []
    for u in range(target_feats.shape[1]):
        g = q.gather(0, inds[:, u:u + 1].expand(-1, q.shape[1]))
        rows.append(torch.log(g + min_prob).sum(0, keepdim=True))
    return _ref_prior(torch.cat(rows), lam)


def ref_rank_reorder(clip_feats, target_feats, p=3, top_fraction=0.05, scale_p=0.5, seed=0):
    torch.manual_seed(seed)  # the reference's baseline uses 5 unseeded random permutations
    top_n = int(target_feats.shape[0] * top_fraction)
    values, inds = torch.topk(target_feats, dim=0, k=top_n)  # decreasing
    rows = []
    for u in range(values.shape[1]):
        g = clip_feats.gather(0, inds[:, u:u + 1].expand(-1, clip_feats.shape[1]))  # (n, C)
        avg = g.mean(dim=0, keepdim=True)
        ranks = torch.argsort(torch.argsort(g, dim=0), dim=0)  # each image's rank under the concept
        target = values[:, u:u + 1]
        ascending = torch.flip(target, dims=[0])
        shuffled = torch.cat([ascending[torch.randperm(len(ascending))] for _ in range(5)], dim=1)
        baseline = torch.mean(torch.abs(ascending - shuffled) ** p)
        reorg = ascending.expand(-1, g.shape[1]).gather(0, ranks)
        err = torch.mean(torch.abs(target - reorg) ** p, dim=0, keepdim=True) / baseline
        rows.append(err / avg ** scale_p)
    return -torch.cat(rows)


REFERENCE = {"soft_wpmi": ref_soft_wpmi, "wpmi": ref_wpmi, "rank_reorder": ref_rank_reorder,
             "cos": ref_cos, "cos_cubed": ref_cos_cubed}


def reference_clip_features(scorer, probe, words):
    """save_clip_image_features / save_clip_text_features, then get_similarity_from_activations's
    normalisation and product: the plain cosine (N, C)."""
    with torch.no_grad():
        image = torch.cat([scorer.encode_images(torch.stack(
            [scorer.preprocess(probe.read_image(i)) for i in range(s, min(len(probe), s + 50))]))
            for s in range(0, len(probe), 50)]).float()
        text = scorer.encode_texts([w for w in words if w != ""]).float()
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return image @ text.T


# -- shared inputs -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(resnet18, resnet18_run, tmp_path_factory):
    from neuronatlas.backends.scorer import load_scorer
    from neuronatlas.data.world import CONCEPTS

    words = sorted({CONCEPTS[c].phrase for c in CONCEPTS.ids()})
    concept_file = tmp_path_factory.mktemp("concepts") / "world.txt"
    concept_file.write_text("\n".join(words) + "\n")  # one per line, as the reference's data/*.txt
    probe = na.open_probe(PROBE)
    transform = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    acts = hooked_activations(resnet18.model, probe, transform, LAYERS, reference_pool_avg)
    clip_feats = reference_clip_features(load_scorer(SCORER), probe, words)
    return {"words": words, "file": concept_file, "acts": acts, "clip_feats": clip_feats,
            "probe": probe}


def test_same_activations_as_the_reference_hooks(resnet18_run, inputs):
    """The recorded (N, U) matrix is the reference's hook output with its pooling (conv: spatial
    mean; fc: as is) on the reference's preprocessing (the weights' own transforms)."""
    for layer in LAYERS:
        np.testing.assert_allclose(np.asarray(resnet18_run.acts(layer)), inputs["acts"][layer].numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", ["soft_wpmi", "wpmi", "rank_reorder", "cos", "cos_cubed"])
def test_labels_equal_the_reference(resnet18_run, inputs, fn):
    """describe() with only the scorer and the concept file (the default soft_wpmi and every
    default of each function) gives the reference's label on every unit, and the reference's
    score for each of its top-5 concepts."""
    options = {} if fn == "soft_wpmi" else {"similarity": fn}
    df = describe(resnet18_run, "clip-dissect", scorer=SCORER, concepts=str(inputs["file"]), top=5,
                  **options)
    for layer in LAYERS:
        # the run's own matrix (equal to the reference's hooks up to float32 rounding, test above):
        # a 1e-6 difference would swap images of nearly equal activation in a top-k
        acts = torch.from_numpy(np.array(resnet18_run.acts(layer), dtype=np.float32))
        ref = REFERENCE[fn](inputs["clip_feats"], acts)  # (U, C)
        ref_value, ref_id = torch.max(ref, dim=1)
        idx = ranked(df, layer, "concept_index").astype(int)  # (U, 5)
        scores = ranked(df, layer, "score").astype(float)
        if fn == "rank_reorder":
            # the departure: a concept whose mean cosine over the unit's top images is <= 0 gets NaN
            # in the reference, and torch.max returns a NaN when there is one
            nan_units = ref.isnan().any(1).numpy()
            assert nan_units.mean() < 0.5  # the comparison below covers most units
            np.testing.assert_array_equal(idx[~nan_units, 0], ref_id.numpy()[~nan_units])
            # the reference's score is random (5 random permutations as baseline): ours is the same
            # up to one positive factor per unit (its expected baseline over the random one)
            theirs = np.take_along_axis(ref.double().numpy(), idx, 1)[~nan_units]
            mine = scores[~nan_units]
            ok = np.isfinite(mine) & (np.abs(mine) > 1e-6)  # (a perfect order scores 0 on both)
            ratio = np.where(ok, theirs / np.where(ok, mine, 1), np.nan)
            first = np.nanmean(ratio, axis=1, keepdims=True)
            np.testing.assert_allclose(ratio[ok], np.broadcast_to(first, ratio.shape)[ok], rtol=2e-4)
            assert (first[np.isfinite(first)] > 0).all()
            continue
        tol = {"atol": 1e-5, "rtol": 0} if fn.startswith("cos") else {"rtol": 1e-4, "atol": 1e-3}
        top5 = torch.topk(ref, 5, dim=1)
        theirs = np.take_along_axis(ref.double().numpy(), idx, 1)  # the reference's score of ours
        np.testing.assert_allclose(scores, theirs, **tol, err_msg=f"{fn} {layer}")
        np.testing.assert_allclose(theirs, top5.values.double().numpy(), **tol)
        # top-1 identical, except where the reference's best two are tied at float32 resolution
        # (the reference's torch.max and our lower-index rule may then pick different ones)
        margin = (top5.values[:, 0] - top5.values[:, 1]).double().numpy()
        tied = margin <= 1e-5 * np.maximum(1, np.abs(top5.values[:, 0].double().numpy()))
        assert tied.sum() <= 0.01 * len(tied), (fn, layer, tied.sum())
        np.testing.assert_array_equal(idx[~tied, 0], ref_id.numpy()[~tied], err_msg=f"{fn} {layer}")
        labels = ranked(df, layer, "label")[:, 0]
        assert [w for w, t in zip(labels, tied) if not t] == [
            inputs["words"][i] for i, t in zip(ref_id.numpy(), tied) if not t]  # words[id]


def _reference(inputs, run, layer, fn="soft_wpmi", scale=1.0):
    acts = torch.from_numpy(np.array(run.acts(layer), dtype=np.float32))
    return REFERENCE[fn](scale * inputs["clip_feats"], acts).double().numpy()


def _reference_top1(inputs, run, layer, fn="soft_wpmi", scale=1.0):
    return _reference(inputs, run, layer, fn, scale).argmax(1)


def assert_reference_top1(ref: np.ndarray, ours: np.ndarray) -> None:
    """Our label is the reference's argmax on every unit, or (on at most 1% of units) one that ties
    with it at float32 resolution."""
    best = ref.max(1)
    mine = ref[np.arange(len(ours)), ours]
    assert (mine >= best - 1e-5 * np.maximum(1, np.abs(best))).all()
    assert (ours != ref.argmax(1)).mean() <= 0.01


def test_the_command_line_default_is_the_reference(resnet18_run, inputs):
    """`neuronatlas describe RUN --scorer zoo:world-clip --concepts FILE`, nothing else: the
    reference's soft_wpmi label on every unit."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "neuronatlas.cli", "describe", str(resnet18_run.path),
                        "--scorer", SCORER, "--concepts", str(inputs["file"])],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    labels = na.open_run(resnet18_run.path).labels("clip-dissect")
    for layer in LAYERS:
        assert_reference_top1(_reference(inputs, resnet18_run, layer),
                              ranked(labels, layer, "concept_index")[:, 0].astype(int))


def test_logit_scale_100_is_an_option_applied_after_the_cached_embeddings(resnet18_run, inputs):
    """logit_scale=100 (CLIP's own scale; the package's default before issue 22) equals the
    reference fed 100 * cos, reuses the cached embeddings, and departs from the reference's
    default labels on most units: the size of the departure we no longer make by default."""
    cache = resnet18_run.path / "cache" / "embeddings"
    describe(resnet18_run, "clip-dissect", scorer=SCORER, concepts=str(inputs["file"]))
    before = sorted(p.name for p in cache.glob("*.npy"))
    df = describe(resnet18_run, "clip-dissect", name="clip-dissect-scale100", scorer=SCORER,
                  concepts=str(inputs["file"]), logit_scale=100.0)
    assert sorted(p.name for p in cache.glob("*.npy")) == before  # scale applies after the cache
    assert resnet18_run.label_config("clip-dissect-scale100")["logit_scale"] == 100.0
    same = []
    for layer in LAYERS:
        ours = ranked(df, layer, "concept_index")[:, 0].astype(int)
        assert_reference_top1(_reference(inputs, resnet18_run, layer, scale=100.0), ours)
        same.append(ours == _reference_top1(inputs, resnet18_run, layer))
    same = np.concatenate(same)
    print(f"soft_wpmi at scale 100: reference's (plain cosine) label on {same.sum()}/{len(same)} units")
    assert same.mean() < 0.5


def test_blank_concept_line_misaligns_the_reference_not_us(resnet18_run, inputs, tmp_path):
    """The reference embeds the concept file without its blank lines but labels with the file's
    lines (blanks kept): every unit whose best concept sits after a blank line gets the previous
    line's word. We label from the list that was scored."""
    words = inputs["words"]
    path = tmp_path / "with-blank.txt"
    path.write_text("\n".join(words[:10] + [""] + words[10:]) + "\n")
    df = describe(resnet18_run, "clip-dissect", name="clip-dissect-blank", scorer=SCORER,
                  concepts=str(path))
    lines = path.read_text().split("\n")
    wrong = total = 0
    for layer in LAYERS:
        ref_id = _reference_top1(inputs, resnet18_run, layer)  # scored without the blank: same ids
        ref_labels = [lines[i] for i in ref_id]  # describe_neurons.py: words[id], blanks kept
        right = [words[i] for i in ref_id]
        assert list(ranked(df, layer, "label")[:, 0]) == right
        wrong += sum(a != b for a, b in zip(ref_labels, right))
        total += len(right)
    print(f"blank line after concept 10: the reference mislabels {wrong}/{total} units")
    assert wrong > 0.5 * total
