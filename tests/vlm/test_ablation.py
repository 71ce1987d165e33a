"""Token ablation pieces against brute force: the answers path equals the model's own forward, the
hook replaces exactly the chosen image positions (== running the model on hand-edited embeddings),
the streamed mean vector equals the mean of all tokens with its count, object cells / dilation /
high-norm / seeded random sets, integrated gradients complete to f(clean) - f(mean-ablated image)
with the text untouched (the reference's off-by-one baseline gives another value), and the
answer checks (an empty token is never right)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronatlas.vlm.ablation import (MeanVector, ablated, dilate, high_norm_tokens, image_features,
                                      integrated_gradients, mask_cells, object_tokens, positions_mask,
                                      random_tokens)
from neuronatlas.vlm.ablation_run import Item, names_object, vqa_right
from neuronatlas.vlm.answers import greedy

from tests.vlm.tiny import tiny_subject


def _pixels(n, seed=3):
    torch.manual_seed(seed)
    return torch.randn(n, 3, 30, 30)


@pytest.mark.parametrize("style", ["llava-1.5", "llava-phi"])
def test_greedy_first_step_is_the_models_own_forward(style):
    s = tiny_subject(style)
    px = _pixels(3)
    prompts = ["ab", "abcdef", "abc"]
    inputs = s.inputs(px, prompts)
    with torch.no_grad():
        logits = s.model(**inputs).logits
    last = inputs["attention_mask"].sum(1) - 1
    ref = logits[torch.arange(3), last]
    ans = greedy(s, px, prompts, 1, targets=[5, 6, 7])
    assert [s.decode_token(int(t)) for t in ref.argmax(-1)] == ans.first_token
    torch.testing.assert_close(ans.target_prob, torch.softmax(ref, -1)[torch.arange(3), [5, 6, 7]])


def test_ablation_hook_equals_hand_edited_embeddings():
    s = tiny_subject()
    px = _pixels(2)
    inputs = s.inputs(px, ["ab", "abcd"])
    tokens = [[0, 3, 24], [7]]
    mask = positions_mask(s, inputs["input_ids"], tokens)
    assert mask.sum() == 4 and mask[0, 1 + 3] and mask[1, 1 + 7]  # position = 1 (<bos>) + k
    vec = torch.randn(s.config.text_config.hidden_size)
    with torch.no_grad():
        with ablated(s, mask, vec):
            got = s.model(**inputs).logits
        emb = s.model.get_input_embeddings()(inputs["input_ids"])
        emb[inputs["input_ids"] == s.image_token_id] = image_features(s, px).reshape(-1, emb.shape[-1])
        emb[mask] = vec
        want = s.model(inputs_embeds=emb, attention_mask=inputs["attention_mask"]).logits
        with ablated(s, mask, None):  # zero ablation
            zero = s.model(**inputs).logits
        emb[mask] = 0.0
        want0 = s.model(inputs_embeds=emb, attention_mask=inputs["attention_mask"]).logits
        clean = s.model(**inputs).logits
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(zero, want0)
    assert not torch.allclose(got, clean)
    with torch.no_grad():  # the hook is gone afterwards
        torch.testing.assert_close(s.model(**inputs).logits, clean)


def test_streamed_mean_vector_and_count():
    s = tiny_subject()
    a, b = image_features(s, _pixels(3, 1)), image_features(s, _pixels(2, 2))
    mv = MeanVector(a.shape[-1])
    mv.update(a)
    mv.update(b)
    allt = torch.cat([a, b]).reshape(-1, a.shape[-1])
    assert mv.count == 5 * s.n_image_tokens == len(allt)
    np.testing.assert_allclose(mv.mean, allt.double().mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_object_cells_dilation_and_token_indices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        grid, side = int(rng.integers(3, 9)), int(rng.integers(20, 70))
        mask = rng.random((side, side)) > 0.995
        cells = mask_cells(mask, grid)
        brute = np.zeros((grid, grid), bool)
        for r in range(grid):
            for c in range(grid):
                ys = [y for y in range(side) if y * grid // side == r]
                xs = [x for x in range(side) if x * grid // side == c]
                brute[r, c] = mask[np.ix_(ys, xs)].any()
        assert np.array_equal(cells, brute)
        for b in range(3):
            d = dilate(cells, b)
            rr, cc = np.nonzero(cells)
            want = np.zeros_like(cells)
            for r in range(grid):
                for c in range(grid):
                    want[r, c] = any(max(abs(r - a), abs(c - e)) <= b for a, e in zip(rr, cc))
            assert np.array_equal(d, want)
    s = tiny_subject()  # grid 5, no CLS
    m = np.zeros((30, 30), bool)
    m[7, 13] = True  # cell (1, 2)
    assert object_tokens(s, m, 0) == [7]
    assert object_tokens(s, m, 1) == [1, 2, 3, 6, 7, 8, 11, 12, 13]
    s.model.config.vision_feature_select_strategy = "full"  # with CLS, tokens shift by one
    assert object_tokens(s, m, 0) == [8]


def test_high_norm_and_random_sets():
    f = torch.randn(50, 8)
    f[[3, 17]] *= 20
    norms = f.norm(dim=-1)
    want = [i for i in range(50) if norms[i] > norms.mean() + 2 * norms.std()]
    assert high_norm_tokens(f) == want and {3, 17} <= set(want)
    a, b = random_tokens(65, 10, "x/1"), random_tokens(65, 10, "x/1")
    assert a == b and len(set(a)) == 10 and random_tokens(65, 10, "x/2") != a
    assert random_tokens(5, 10, "y") == [0, 1, 2, 3, 4]


def test_integrated_gradients_complete_to_the_mean_ablated_image():
    s = tiny_subject()
    inputs = s.inputs(_pixels(1), ["abc"])
    feats = image_features(s, _pixels(1))
    mean = feats[0].mean(0)
    target = 11
    ig = integrated_gradients(s, inputs, target, mean, steps=400, chunk=100, absolute=False)
    assert ig.shape == (s.n_image_tokens,)

    def f(mask, value):
        with torch.no_grad(), ablated(s, mask, value):
            return s.model(**inputs).logits[0, -1, target].item()

    everything = positions_mask(s, inputs["input_ids"], [list(range(s.n_image_tokens))])
    clean, base = f(None, None), f(everything, mean)
    assert abs(ig.sum().item() - (clean - base)) < 1e-3 * max(1.0, abs(clean - base))
    # the reference's baseline also overwrote the first text token after the image: another value
    off_by_one = everything.clone()
    off_by_one[0, 1 + s.n_image_tokens] = True
    assert abs(f(off_by_one, mean) - base) > 1e-3
    top = integrated_gradients(s, inputs, target, mean, steps=20)
    assert (top >= 0).all()


def test_answer_checks():
    assert not vqa_right("", "red") and not vqa_right("  ", "red")
    assert vqa_right("red", "red") and not vqa_right("blue", "red")
    it = Item(0, 0, "red", "circle", np.zeros((2, 2), bool))
    assert names_object("a big red solid circle left and a small blue striped square right on a "
                        "white background", it)
    assert not names_object("a big blue solid circle left and a small red striped square right", it)


def test_a_mask_that_does_not_fit_is_an_error_not_a_no_op():
    s = tiny_subject()
    inputs = s.inputs(_pixels(2), ["ab", "abcd"])
    wrong = torch.zeros(1, inputs["input_ids"].shape[1], dtype=torch.bool)
    with pytest.raises(ValueError, match="does not fit"):
        with torch.no_grad(), ablated(s, wrong, None):
            s.model(**inputs)
