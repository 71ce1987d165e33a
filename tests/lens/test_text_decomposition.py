"""Sparse text decomposition: OMP and positive lasso over unit-norm text atoms."""

import itertools

import numpy as np
import pytest

from neuronatlas.errors import UserError
from neuronatlas.describe.text_decomposition import (DecomposeConfig, TextDictionary, decompose, decompose_many,
                                        omp, positive_lasso, quality)


def random_atoms(t=300, d=48, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((t, d))
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_omp_recovers_planted_sparse_combination():
    A = random_atoms()
    rng = np.random.default_rng(1)
    for trial in range(10):
        support = rng.choice(len(A), 5, replace=False)
        c = rng.uniform(0.5, 2.0, 5) * rng.choice([-1, 1], 5)
        x = c @ A[support]
        idx, coef = omp(A, x[None], n_terms=5)
        assert set(idx[0]) == set(support)
        got = dict(zip(idx[0], coef[0]))
        np.testing.assert_allclose([got[s] for s in support], c, atol=1e-9)


def test_omp_stops_early_on_exact_fit():
    A = random_atoms()
    x = 2.0 * A[7] - A[42]
    idx, coef = omp(A, x[None], n_terms=10)
    assert sorted(idx[0][:2]) == [7, 42] and (idx[0][2:] == -1).all() and (coef[0][2:] == 0).all()


def test_omp_matches_sklearn_orthogonal_mp():
    from sklearn.linear_model import orthogonal_mp

    A = random_atoms(t=200, d=32, seed=3)
    X = np.random.default_rng(4).standard_normal((6, 32))  # dense: no exact sparse answer
    idx, coef = omp(A, X, n_terms=8)
    ref = orthogonal_mp(A.T, X.T, n_nonzero_coefs=8)  # (T, N)
    for i in range(len(X)):
        ours = np.zeros(len(A))
        ours[idx[i]] = coef[i]
        np.testing.assert_allclose(ours, ref[:, i], atol=1e-8)


def test_omp_matches_brute_force_greedy():
    """Each step picks the atom that most reduces the least-squares residual (for unit-norm atoms this
    is OMP's max-|correlation| rule); checked by refitting every candidate."""
    A = random_atoms(t=40, d=12, seed=5)
    x = np.random.default_rng(6).standard_normal(12)
    idx, _ = omp(A, x[None], n_terms=4)
    chosen = []
    for _ in range(4):
        if chosen:
            S = A[chosen].T
            r = x - S @ np.linalg.lstsq(S, x, rcond=None)[0]
        else:
            r = x
        best = np.argmax(np.abs(A @ r))
        chosen.append(int(best))
    assert list(idx[0]) == chosen


def test_per_dimension_normalisation_gives_wrong_words():
    """The reference divided the centred text matrix by its column norms (per dimension). With text
    embeddings whose dimensions have different spreads (as CLIP's do), that rescales the atoms away
    from the space the decomposed vector lives in and leaves them of unequal length, so OMP misses the
    texts a planted vector is made of; with per-atom normalisation it finds them every time."""
    rng = np.random.default_rng(0)
    t, d, k = 2000, 256, 8
    spread = np.geomspace(0.1, 3.0, d)  # anisotropic dimensions
    emb = rng.standard_normal((t, d)) * spread + rng.standard_normal(d) * 0.3
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ours = TextDictionary.from_embeddings([f"w{i}" for i in range(t)], emb, center=True)
    assert np.allclose(np.linalg.norm(ours.atoms_TD, axis=1), 1, atol=1e-6)

    centred = emb - emb.mean(0)  # the reference's dictionary: centred, divided by column norms
    per_dim = centred / np.linalg.norm(centred, axis=0, keepdims=True)
    assert np.ptp(np.linalg.norm(per_dim, axis=1)) > 0.1  # atoms of unequal length

    right = wrong = 0
    for trial in range(20):
        support = rng.choice(t, k, replace=False)
        x = rng.uniform(0.5, 1.5, k) @ ours.atoms_TD[support]
        dec = decompose(x, ours, DecomposeConfig(n_terms=k))
        right += set(dec.indices) == set(support) and dec.cosine > 1 - 1e-6
        idx, _ = omp(per_dim, x[None], n_terms=k)
        wrong += set(idx[0]) != set(support)
    assert right == 20
    assert wrong >= 10


def test_dictionary_drops_duplicate_and_central_atoms():
    emb = np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    d = TextDictionary.from_embeddings(["a", "b", "a2", "c"], emb, center=False)
    assert d.texts == ("a", "b", "c") and d.n_merged == 1
    with pytest.raises(UserError, match="no usable atoms"):
        TextDictionary.from_embeddings(["x", "y"], np.ones((2, 3)), center=True)
    with pytest.raises(UserError, match="do not match"):
        TextDictionary.from_embeddings(["x"], np.ones((2, 3)))


def test_decomposition_reports_quality_and_terms():
    A = random_atoms(t=100, d=20, seed=7)
    d = TextDictionary.from_embeddings([f"t{i}" for i in range(100)], A, center=False)
    x = 3 * d.atoms_TD[10] + 1 * d.atoms_TD[20]
    dec = decompose(x, d, DecomposeConfig(n_terms=2))
    assert dec.texts[0] == "t10" and dec.texts[1] == "t20"
    assert dec.cosine == pytest.approx(1.0, abs=1e-6) and dec.relative_residual < 1e-5
    one = decompose(x, d, DecomposeConfig(n_terms=1))
    recon = one.coefs[0] * d.atoms_TD[10]
    cos, rel = quality(x[None], recon[None])
    assert one.cosine == pytest.approx(cos[0], abs=1e-6)
    assert one.relative_residual == pytest.approx(rel[0], abs=1e-6)
    assert 0 < one.cosine < 1


def test_quality_hand_computed():
    cos, rel = quality(np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[3.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(cos, [0.6, 0.0])
    np.testing.assert_allclose(rel, [0.8, 1.0])


def test_positive_lasso_satisfies_kkt():
    """Optimality of min 1/(2D)||x - A^T c||^2 + alpha||c||_1, c >= 0: the gradient of the smooth part
    g = A (x - A^T c) / D equals alpha where c > 0 and is <= alpha where c = 0."""
    A = random_atoms(t=80, d=24, seed=8)
    rng = np.random.default_rng(9)
    x = rng.uniform(0.5, 1.5, 3) @ A[[3, 30, 60]] + 0.05 * rng.standard_normal(24)
    alpha = 2e-3
    c = positive_lasso(A, x[None], alpha, tol=1e-12, max_iter=100000)[0]
    assert (c >= 0).all() and (c > 0).sum() >= 3
    g = A @ (x - A.T @ c) / A.shape[1]
    np.testing.assert_allclose(g[c > 0], alpha, atol=1e-6)
    assert (g[c == 0] <= alpha + 1e-6).all()
    assert {3, 30, 60} <= set(np.flatnonzero(c))


def test_lasso_decomposition_is_positive_and_sorted():
    A = random_atoms(t=60, d=16, seed=10)
    d = TextDictionary.from_embeddings([f"t{i}" for i in range(60)], A, center=False)
    x = 2 * d.atoms_TD[5] + d.atoms_TD[6]
    dec = decompose(x, d, DecomposeConfig(method="lasso", alpha=1e-3, n_terms=5))
    assert (dec.coefs > 0).all() and list(dec.coefs) == sorted(dec.coefs, reverse=True)
    assert dec.texts[:2] == ("t5", "t6") and dec.cosine > 0.99


def test_batched_equals_one_at_a_time():
    A = random_atoms(t=120, d=24, seed=11)
    d = TextDictionary.from_embeddings([f"t{i}" for i in range(120)], A, center=True)
    X = np.random.default_rng(12).standard_normal((5, 24))
    many = decompose_many(X, d, DecomposeConfig(n_terms=6))
    for x, m in zip(X, many):
        one = decompose(x, d, DecomposeConfig(n_terms=6))
        assert one.texts == m.texts
        np.testing.assert_allclose(one.coefs, m.coefs, atol=1e-10)


def test_config_errors():
    for bad in (dict(method="admm"), dict(n_terms=0), dict(alpha=0)):
        with pytest.raises(UserError):
            DecomposeConfig(**bad)
    with pytest.raises(UserError, match="dimensions"):
        omp(random_atoms(t=5, d=4), np.ones((1, 3)), 2)


# -- end to end on world-clip's second-order PCs --------------------------------------------------
from lens_apps_fixtures import world_clip_lens_run  # noqa: E402,F401


def test_world_clip_dictionary_merges_unknown_words(world_clip_lens_run):
    from neuronatlas.describe.text_decomposition import model_of, text_dictionary

    out, results = world_clip_lens_run
    _, scorer = model_of(results[0])
    # world-clip's tokenizer maps words outside the world to <unk>: identical atoms, kept once
    d = text_dictionary(scorer, ["red", "blue", "zebra", "giraffe", "star"], cache_dir=out)
    assert d.texts == ("red", "blue", "zebra", "star") and d.n_merged == 1
    assert np.allclose(np.linalg.norm(d.atoms_TD, axis=1), 1, atol=1e-5)


def test_describe_second_order_labels(world_clip_lens_run):
    import neuronatlas as na
    from neuronatlas.describe import describe
    from neuronatlas.describe.text_decomposition import model_of, text_dictionary

    out, results = world_clip_lens_run
    with pytest.raises(UserError, match="does not take similarity"):
        describe(out, "second-order", similarity="wpmi")
    describe(out, "second-order", top=8)
    run = na.open_run(out)
    labels = run.labels("second-order")
    units = [u for r in results for u in r.units]
    assert set(labels["unit"]) == set(units) and set(units) <= set(run.units["unit"])
    assert {"cosine", "relative_residual"} <= set(labels.columns)
    assert run.label_config("second-order")["concepts"]["name"] == "world"
    for unit, g in labels.groupby("unit"):
        assert list(g["rank"]) == list(range(len(g))) and 1 <= len(g) <= 8
        assert list(g["score"]) == sorted(g["score"], reverse=True)
    # the stored terms rebuild each PC with the stored cosine (labels = coefficients of unit atoms)
    _, scorer = model_of(results[0])
    atoms = dict(zip(*(lambda d: (d.texts, d.atoms_TD))(text_dictionary(scorer, "world", cache_dir=out))))
    for res in results:
        for i in (0, 7, 100):
            g = labels[labels["unit"] == res.units[i]]
            recon = sum(c * atoms[t].astype(np.float64) for t, c in zip(g["label"], g["score"]))
            pc = np.asarray(res.pc[i], np.float64)
            cos = recon @ pc / np.linalg.norm(recon) / np.linalg.norm(pc)
            assert cos == pytest.approx(g["cosine"].iloc[0], abs=1e-4)
            assert cos > 0.3


def test_second_order_labels_go_through_evaluate(world_clip_lens_run):
    """The evaluation suite scores second-order labels like any other method (simulation with
    world-clip on the recorded activations)."""
    from neuronatlas.describe import describe
    from neuronatlas.evaluate import evaluate

    out, _ = world_clip_lens_run
    describe(out, "second-order", top=4)
    summary = evaluate(out, methods="second-order", scorer="zoo:world-clip", embedder=None)
    assert list(summary["method"]) == ["second-order"]
    row = summary.iloc[0]
    assert row["n_units"] == 1024


def test_open_clip_text_dictionary_is_cached(b32_target, tmp_path):
    """A real (random-weight) open_clip ViT-B-32 text tower: 512-d unit atoms, cached on disk and
    read back identically."""
    from neuronatlas.backends.clip import scorer_from_target
    from neuronatlas.describe.text_decomposition import default_text_set, text_dictionary

    scorer = scorer_from_target(b32_target)
    assert default_text_set(scorer) == "words20k"
    words = ["dog", "cat", "car", "tree", "sky"]
    a = text_dictionary(scorer, words, cache_dir=tmp_path)
    assert a.atoms_TD.shape == (5, 512) and a.texts == tuple(words)
    assert len(list((tmp_path / "cache" / "embeddings").glob("texts-*.npy"))) == 1
    b = text_dictionary(scorer, words, cache_dir=tmp_path)
    np.testing.assert_array_equal(a.atoms_TD, b.atoms_TD)


def test_lasso_labels_are_positive(world_clip_lens_run):
    from neuronatlas.describe.second_order import label_neurons

    out, results = world_clip_lens_run
    df, config = label_neurons(out, [results[1].layer], solver="lasso", alpha=1e-3, n_terms=6,
                               progress=False)
    assert config["decomposition"]["method"] == "lasso" and set(df["unit"]) == set(results[1].units)
    assert (df["score"] > 0).all() and df.groupby("unit").size().max() <= 6
    assert ((df["cosine"] > 0) & (df["cosine"] <= 1 + 1e-9)).all()


def test_no_second_order_effects_is_a_clear_error(tmp_path):
    from neuronatlas.describe.second_order import second_order_results

    with pytest.raises(UserError, match="no second-order effects.*lens second-order"):
        second_order_results(tmp_path)


def test_methods_for_offers_second_order_only_with_effects(world_clip_lens_run, tmp_path):
    from neuronatlas.describe import METHODS, methods_for

    out, _ = world_clip_lens_run
    assert "second-order" in METHODS and "second-order" in methods_for(out)
    assert "second-order" not in methods_for(tmp_path) and "netdissect" in methods_for(tmp_path)
