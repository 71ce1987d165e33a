"""Per-image concept discovery from significant neurons and from the image embedding."""

import numpy as np
import pytest

from neuronatlas.errors import UserError
from neuronatlas.lens.decompose import DecomposeConfig, TextDictionary
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
