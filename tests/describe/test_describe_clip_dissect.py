"""CLIP-Dissect: every similarity function equals a loop-by-loop transcription of its formula,
chunking changes nothing, concept sets are cleaned without misaligning labels, and the whole path
(record with save_acts -> describe -> run.labels()) works and recovers planted concepts."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import neuronatlas as na
from neuronatlas.concepts import ConceptSet, load_concepts
from neuronatlas.describe import describe
from neuronatlas.describe.clip_dissect import DEFAULTS, Similarities, top_concepts
from neuronatlas.errors import UserError

torch.set_num_threads(1)


# -- loop-by-loop transcriptions of the paper's formulas (float64, no vectorisation) -------------
def loop_scores(A, P, fn, **kw):
    """sim[u, c] for activations A (N, U) and similarities P (N, C), one unit and concept at a time."""
    prm = {**DEFAULTS[fn], **kw}
    N, U = A.shape
    C = P.shape[1]
    S = np.zeros((U, C))
    if fn in ("cos", "cos_cubed"):
        for u in range(U):
            a = A[:, u].copy()
            if fn == "cos_cubed":
                a = (a - a.mean()) ** 3
                a = a / max(np.sqrt((a ** 2).sum()), prm["min_norm"])
            else:
                a = a / np.sqrt((a ** 2).sum())
            for c in range(C):
                p = P[:, c].copy()
                if fn == "cos_cubed":
                    p = (p - p.mean()) ** 3
                    p = p / max(np.sqrt((p ** 2).sum()), prm["min_norm"])
                else:
                    p = p / np.sqrt((p ** 2).sum())
                S[u, c] = sum(a[i] * p[i] for i in range(N))
        return S
    if fn == "rank_reorder":
        n = max(2, int(N * prm["top_fraction"]))
        for u in range(U):
            top = sorted(range(N), key=lambda i: -A[i, u])[:n]
            t = [A[i, u] for i in top]
            base = sum(abs(x - y) ** prm["p"] for x in t for y in t) / n ** 2
            asc = sorted(t)
            for c in range(C):
                s = [P[i, c] for i in top]
                order = sorted(range(n), key=lambda j: s[j])  # top images by the concept, ascending
                reorg = [0.0] * n
                for rank, j in enumerate(order):
                    reorg[j] = asc[rank]
                err = sum(abs(t[j] - reorg[j]) ** prm["p"] for j in range(n)) / n
                S[u, c] = -err / base / (sum(s) / n) ** prm["scale_p"]
        return S
    # wpmi / soft_wpmi
    k = min(N, prm["top_k"])
    Q = np.zeros_like(P)
    for i in range(N):
        z = [math.exp(prm["a"] * P[i, c] - prm["a"] * P[i].max()) for c in range(C)]
        Q[i] = [x / sum(z) for x in z]
    logp = np.zeros((U, C))
    for u in range(U):
        top = sorted(range(N), key=lambda i: -A[i, u])[:k]
        for c in range(C):
            for j, i in enumerate(top):
                if fn == "soft_wpmi":
                    pj = prm["p_start"] - j / k * (prm["p_start"] - prm["p_end"])
                    logp[u, c] += math.log(1 + pj * (Q[i, c] - 1) + prm["min_prob"])
                else:
                    logp[u, c] += math.log(Q[i, c] + prm["min_prob"])
    for c in range(C):
        m = logp[:, c].max()
        prior = m + math.log(sum(math.exp(x - m) for x in logp[:, c]) / U)
        for u in range(U):
            S[u, c] = logp[u, c] - prm["lam"] * prior
    return S


def random_inputs(seed, N=60, U=7, C=11, scale=100.0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N, U))
    cos = rng.uniform(0.1, 0.4, size=(N, C))  # CLIP-like cosines (positive: rank_reorder's sqrt)
    return A, cos * scale


@pytest.mark.parametrize("fn", list(DEFAULTS))
@pytest.mark.parametrize("scale", [100.0, 1.0])  # 100: peaked softmax (sparse path); 1: dense path
def test_each_similarity_matches_the_loop_transcription(fn, scale):
    A, P = random_inputs(1, scale=scale)
    kw = {"top_k": 20} if "top_k" in DEFAULTS[fn] else {}
    if fn == "rank_reorder":
        kw = {"top_fraction": 0.2}
    want = loop_scores(A, P, fn, **kw)
    top = 4
    v, i = top_concepts(torch.from_numpy(A), Similarities(dense=torch.from_numpy(P)), fn, top=top,
                        dtype=torch.float64, **kw)
    want_i = np.argsort(-want, axis=1, kind="stable")[:, :top]
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(v, np.take_along_axis(want, want_i, 1), rtol=1e-5, atol=1e-7)
    # the float32 default gives the same labels
    _, i32 = top_concepts(A.astype(np.float32), Similarities(dense=torch.from_numpy(P).float()), fn,
                          top=1, **kw)
    np.testing.assert_array_equal(i32[:, 0], want_i[:, 0])


def embeddings(rng, n, c, d):
    """Unit vectors sharing a common direction, so cosines are positive as CLIP's mostly are."""
    shared = rng.normal(size=d)
    img = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n, d)) + 2 * shared), dim=1)
    txt = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(c, d)) + 2 * shared), dim=1)
    return img, txt


@pytest.mark.parametrize("fn", list(DEFAULTS))
def test_chunked_equals_unchunked(fn):
    rng = np.random.default_rng(2)
    img, txt = embeddings(rng, 80, 23, 16)
    A = rng.normal(size=(80, 9))
    sims = Similarities(img, txt)
    kw = {"top_k": 30} if "top_k" in DEFAULTS[fn] else {}
    whole = top_concepts(A, sims, fn, top=5, dtype=torch.float64, **kw)
    parts = top_concepts(A, sims, fn, top=5, concept_block=4, unit_block=2, row_block=7,
                         dtype=torch.float64, **kw)
    np.testing.assert_array_equal(whole[1], parts[1])
    np.testing.assert_allclose(whole[0], parts[0], rtol=1e-9, atol=1e-9)


def test_unknown_similarity_and_parameter_are_user_errors():
    A, P = random_inputs(0)
    with pytest.raises(UserError, match="soft_wpmi"):
        top_concepts(A, Similarities(dense=torch.from_numpy(P)), "cosine")
    with pytest.raises(UserError, match="top_k"):
        top_concepts(A, Similarities(dense=torch.from_numpy(P)), "wpmi", k=3)


# -- concept sets ----------------------------------------------------------------------------------
def test_concept_file_is_cleaned_and_labels_stay_aligned(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("dog\n\n  cat  \ndog\n\n\nbird\n   \ncat\nfish")
    cs = load_concepts(str(f))
    assert cs.texts == ("dog", "cat", "bird", "fish")
    assert load_concepts(["dog", "cat", "bird", "fish"]).hash == cs.hash
    # a unit planted on concept j is labelled texts[j] (a blank line must not shift the labels)
    rng = np.random.default_rng(0)
    P = rng.uniform(0.1, 0.4, size=(200, 4)) * 100
    A = P[:, [2, 3, 1]] + rng.normal(scale=0.01, size=(200, 3))
    _, i = top_concepts(A, Similarities(dense=torch.from_numpy(P)), "cos", top=1)
    assert [cs.texts[j] for j in i[:, 0]] == ["bird", "fish", "cat"]


def test_builtin_concept_sets():
    w = load_concepts("words3k")
    assert len(w) == 3000 and all(t.isalpha() and len(t) >= 3 for t in w)
    assert len(load_concepts("world")) >= 30 and "circle" in load_concepts("world").texts
    inet = load_concepts("imagenet")
    assert len(inet) == 1000 and inet.texts[1] == "goldfish"
    with pytest.raises(UserError, match="words20k"):
        load_concepts("no-such-set")
    with pytest.raises(UserError, match="empty"):
        ConceptSet("x", ("", "  "))


# -- end to end on a run -------------------------------------------------------------------------
class CharTokenizer:
    """Tokens = characters (ids 1..60), then EOS; enough to drive a random-weight CLIP text tower."""

    def __call__(self, texts, padding=True, truncation=True, max_length=16, return_tensors="pt"):
        ids = [[1 + ord(ch) % 60 for ch in t][:max_length - 1] + [63] for t in texts]
        width = max(len(x) for x in ids)
        mask = [[1] * len(x) + [0] * (width - len(x)) for x in ids]
        ids = [x + [0] * (width - len(x)) for x in ids]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


@pytest.fixture(scope="module")
def tiny_clip_scorer():
    from neuronatlas.backends.clip import HFClipScorer
    from tests.conftest import tiny_hf_clip_target

    target = tiny_hf_clip_target(seed=0, vision_layers=2)
    return HFClipScorer(target, CharTokenizer())


class PlantedUnits(nn.Module):
    """Units whose activation is the scorer's similarity of the image to chosen concepts."""

    def __init__(self, scorer, text_vectors):
        super().__init__()
        self.scorer = scorer
        self.head = nn.Linear(text_vectors.shape[1], text_vectors.shape[0], bias=False)
        self.head.weight.data = text_vectors.clone()

    def forward(self, x):
        return self.head(self.scorer.encode_images(x))


def test_end_to_end_recovers_planted_concepts(tmp_path, tiny_clip_scorer):
    from neuronatlas.models.target import Target

    scorer = tiny_clip_scorer
    concepts = load_concepts("world")
    planted = [0, 5, 12, 20, 30]
    vecs = scorer.encode_texts([concepts.texts[j] for j in planted])
    model = PlantedUnits(scorer, vecs).eval()
    target = Target(spec="test:planted", model=model, preprocess=scorer.preprocess, forward=model)
    run = na.record(target, "world:n=60,size=32", tmp_path / "run", layers="head", save_acts=True,
                    batch_size=20, num_workers=0)
    for fn, kw in (("cos", {}), ("soft_wpmi", {"top_k": 10})):
        df = describe(run, "clip-dissect", scorer=scorer, concepts=concepts, similarity=fn, top=3,
                      **kw)
        assert set(df.columns) >= {"unit", "method", "rank", "label", "score"}
    labels = run.labels()
    assert set(labels["method"]) == {"clip-dissect", "clip-dissect-cos"}
    mine = labels[labels["method"] == "clip-dissect-cos"]
    assert len(mine) == 5 * 3 and list(mine["rank"][:3]) == [0, 1, 2]
    best = mine[mine["rank"] == 0].set_index("unit")["label"]
    assert [best[f"head:{u}"] for u in range(5)] == [concepts.texts[j] for j in planted]
    soft = labels[(labels["method"] == "clip-dissect") & (labels["rank"] == 0)]
    assert soft["score"].notna().all() and len(soft) == 5
    cfg = run.label_config("clip-dissect")
    assert cfg["similarity"] == "soft_wpmi" and cfg["concepts"]["hash"] == concepts.hash
    # embeddings are cached under the run, keyed by scorer + concepts + probe
    cached = sorted(p.name.split("-")[0] for p in (run.path / "cache" / "embeddings").glob("*.npy"))
    assert cached == ["images", "texts"]


def test_ground_truth_unit_is_recovered_by_every_function():
    """A unit whose activation is the scorer's similarity to concept j (plus noise) gets label j.

    The wpmi family reads the images' softmax over concepts, so it can only name a concept that the
    scorer ranks first on some images, and needs k below their number (the paper: k = 100 of 50k
    images); here: concepts that are the argmax of >= 10 of 400 images, k = 5."""
    rng = np.random.default_rng(3)
    img, txt = embeddings(rng, 400, 50, 32)
    sims = Similarities(img, txt)
    P = sims.block(0, 50, torch.float64).numpy()
    planted = np.flatnonzero(np.bincount(P.argmax(1), minlength=50) >= 10)
    assert len(planted) >= 8
    # noise ~1% of P's spread (P is the plain cosine, spread ~0.04)
    A = P[:, planted] + rng.normal(scale=5e-4, size=(400, len(planted)))
    for fn in DEFAULTS:
        kw = {"top_k": 5} if "wpmi" in fn else {}
        _, i = top_concepts(A, sims, fn, top=1, **kw)
        np.testing.assert_array_equal(i[:, 0], planted, err_msg=fn)


def test_run_without_acts_says_record_with_save_acts(tmp_path, tiny_cnn_file):
    run = na.record(tiny_cnn_file, "world:n=8,size=32", tmp_path / "run", layers="fc",
                    num_workers=0)
    with pytest.raises(UserError, match="save-acts"):
        describe(run, "clip-dissect", scorer="conse", concepts=["a", "b"])
    with pytest.raises(UserError, match="known methods"):
        describe(run, "clip-disect")


def test_row_subset_reads_only_the_usable_rows():
    from neuronatlas.describe.clip_dissect import RowSubset

    rng = np.random.default_rng(5)
    A, P = random_inputs(5, N=50)
    A[[3, 17]] = np.nan  # skipped images
    keep = np.flatnonzero(np.isfinite(A).all(1))
    sims = Similarities(dense=torch.from_numpy(P[keep]))
    whole = top_concepts(A[keep], sims, "soft_wpmi", top=3, top_k=10)
    streamed = top_concepts(RowSubset(A, keep), sims, "soft_wpmi", top=3, top_k=10, row_block=6)
    np.testing.assert_array_equal(whole[1], streamed[1])
    np.testing.assert_allclose(whole[0], streamed[0], rtol=1e-6)


def test_embedding_caches_are_keyed_and_never_stale(tmp_path, tiny_clip_scorer):
    from types import SimpleNamespace

    from neuronatlas.describe.embeddings import cache_dir, scorer_key, text_embeddings

    run = SimpleNamespace(path=tmp_path)
    key = scorer_key(tiny_clip_scorer)
    a = text_embeddings(run, tiny_clip_scorer, load_concepts(["red", "blue"]), key)
    b = text_embeddings(run, tiny_clip_scorer, load_concepts(["red", "blue", "green"]), key)
    assert a.shape == (2, 16) and b.shape == (3, 16)
    np.testing.assert_allclose(a, b[:2], atol=1e-5)
    files = sorted(cache_dir(run).glob("texts-*.npy"))
    assert len(files) == 2  # another concept list is another key
    other = dict(key, fingerprint="different weights")
    text_embeddings(run, tiny_clip_scorer, load_concepts(["red", "blue"]), other)
    assert len(list(cache_dir(run).glob("texts-*.npy"))) == 3
    for f in files:  # a damaged file is recomputed, not read
        f.write_bytes(b"garbage")
    again = text_embeddings(run, tiny_clip_scorer, load_concepts(["red", "blue"]), key)
    np.testing.assert_allclose(again, a, atol=1e-6)
