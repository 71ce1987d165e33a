import pickle

import pytest
import torch

from neuronatlas.backends import load_text_embedder
from neuronatlas.backends.text import MiniLMEmbedder
from neuronatlas.errors import UserError


def test_minilm_similarities_are_the_documented_ones(minilm):
    v = minilm.embed(["dog", "puppy", "car", "truck"])
    assert v.shape == (4, 384)
    assert torch.allclose(v.norm(dim=1), torch.ones(4), atol=1e-5)
    s = v @ v.T
    assert s[0, 1] == pytest.approx(0.80, abs=0.05)  # dog / puppy
    assert s[2, 3] == pytest.approx(0.69, abs=0.05)  # car / truck
    assert s[0, 2] == pytest.approx(0.48, abs=0.05)  # dog / car
    assert s[0, 1] > s[0, 2]


def test_order_duplicates_and_empty(minilm):
    v = minilm.embed(["a cat", "a dog", "a cat"])
    assert torch.equal(v[0], v[2]) and not torch.equal(v[0], v[1])
    assert torch.allclose(minilm.embed(["a dog"])[0], v[1])
    assert minilm.embed([]).shape == (0, 384)


def test_batching_does_not_change_vectors(minilm):
    texts = ["a red striped circle", "x", "a small blue star on a gray background", "moped"]
    one = torch.cat([MiniLMEmbedder.embed(minilm, [t]) for t in texts])
    minilm._memory.clear()
    together = minilm.embed(texts)
    assert torch.allclose(one, together, atol=1e-5)


def test_disk_cache_is_reused_and_keyed_by_model(tmp_path):
    first = load_text_embedder("zoo:minilm", cache_dir=tmp_path)
    v = first.embed(["a cup of coffee", "a rocket"])
    first.close()
    copy = pickle.loads(pickle.dumps(first))  # e.g. sent to a worker: reopens its cache
    assert torch.equal(copy.embed(["a rocket"])[0], v[1])
    second = load_text_embedder("minilm", cache_dir=tmp_path)
    second._embed_batch = lambda texts: pytest.fail(f"recomputed {texts}")
    assert torch.equal(second.embed(["a rocket", "a cup of coffee"]), v.flip(0))
    second._version = "another-version"  # another model must not read these vectors
    with pytest.raises(pytest.fail.Exception):
        second.embed(["a rocket"])


def test_unknown_embedder_is_a_user_error():
    with pytest.raises(UserError, match="known: zoo:minilm"):
        load_text_embedder("zoo:word2vec")
