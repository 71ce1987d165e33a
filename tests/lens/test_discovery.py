"""Per-image concept discovery from significant neurons and from the image embedding."""

import numpy as np
import pytest

from neuronatlas.errors import UserError
from neuronatlas.describe.text_decomposition import DecomposeConfig, TextDictionary
from neuronatlas.lens.discovery import from_embedding, from_neurons, significant_neurons


def test_from_neurons_hand_computed():
    norms = np.array([5.0, 1.0, 3.0, 0.5])
    thr = np.array([2.0, 2.0, 1.0, 0.1])  # significant: 0 (5 > 2), 2 (3 > 1), 3 (0.5 > 0.1)
    terms = [[("dog", 1.0), ("grass", 0.2)],
             [("car", 9.0)],                     # not significant
             [("grass", 1.0), ("dog", -0.5)],
             [("sky", 2.0)]]
    got = from_neurons(norms, thr, terms, top=10)
    # dog: 1*5 - 0.5*3 = 3.5 ; grass: 0.2*5 + 1*3 = 4 ; sky: 2*0.5 = 1
    assert got == [("grass", 4.0), ("dog", 3.5), ("sky", 1.0)]
    assert from_neurons(norms, thr, terms, top=1) == [("grass", 4.0)]
    assert list(significant_neurons(norms, thr)) == [3, 2, 0]  # ratios 5, 3, 2.5
    with pytest.raises(UserError, match="same neurons"):
        from_neurons(norms, thr[:3], terms)


def test_from_neurons_nothing_significant():
    assert from_neurons(np.zeros(2), np.ones(2), [[("a", 1.0)], [("b", 1.0)]]) == []


def test_from_embedding_finds_planted_concepts():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((50, 16))
    d = TextDictionary.from_embeddings([f"w{i}" for i in range(50)], emb, center=False)
    x = 2 * d.atoms_TD[3] + d.atoms_TD[17]
    dec = from_embedding(x, d, DecomposeConfig(n_terms=2))
    assert dec.texts == ("w3", "w17") and dec.cosine > 0.999999


# -- end to end on world-clip ------------------------------------------------------------------------
from lens_apps_fixtures import world_clip_lens_run  # noqa: E402,F401


def test_discover_from_run(world_clip_lens_run):
    from neuronatlas.describe.second_order import stored_or_new_labels
    from neuronatlas.describe.text_decomposition import neuron_terms
    from neuronatlas.lens.discovery import discover_from_run

    out, results = world_clip_lens_run
    got = discover_from_run(out, [0, 3], top=5, progress=False)
    assert [g["image"] for g in got] == [0, 3] and got[0]["image_id"] == "world/3/0"
    # the neuron reading equals the array function on the stored norms and thresholds
    units = [u for r in results for u in r.units]
    terms = neuron_terms(stored_or_new_labels(out, progress=False), units)
    norms = np.concatenate([np.asarray(r.norms[3]) for r in results])
    thr = np.concatenate([np.asarray(r.threshold) for r in results])
    want = from_neurons(norms, thr, terms, 5)
    assert [w for w, _ in got[1]["neuron_concepts"]] == [w for w, _ in want]
    np.testing.assert_allclose([s for _, s in got[1]["neuron_concepts"]], [s for _, s in want])
    assert got[1]["n_significant"] == int((norms >= thr).sum())
    assert 0 < got[0]["embedding_cosine"] <= 1 and len(got[0]["embedding_concepts"]) == 5
    with pytest.raises(UserError, match="out of range"):
        discover_from_run(out, [40], progress=False)
