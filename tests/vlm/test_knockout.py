"""Attention knockout: with eager attention (additive float masks) and padding, the attention weights
read back are exactly zero on every blocked edge and rows still sum to one, other layers are
untouched; SDPA (None mask without padding, boolean with padding) gives the same logits as eager;
the reference's False-into-the-mask knockout is a no-op on float masks; windows cover every layer."""

from __future__ import annotations

import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.vlm.knockout import block_matrix, knocked_out, parse_windows, windows
from neuronatlas.vlm.subject import language_parts

from tests.vlm.tiny import tiny_subject


def _case(subject, prompts):
    torch.manual_seed(2)
    pixels = torch.randn(len(prompts), 3, 30, 30)
    inputs = subject.inputs(pixels, prompts)
    t = inputs["input_ids"].shape[1]
    pos = subject.image_positions(inputs["input_ids"])
    lengths = inputs["attention_mask"].sum(1).tolist()
    # sources: the first 6 image tokens; destinations: the last real token and the last 5 image tokens
    src = [p[:6].tolist() for p in pos]
    dst = [[int(n) - 1] + p[-5:].tolist() for p, n in zip(pos, lengths)]
    return inputs, block_matrix(t, src, dst), src, dst


@pytest.mark.parametrize("style", ["llava-1.5", "llava-phi"])
def test_blocked_edges_are_exactly_zero_in_eager_with_padding(style):
    s = tiny_subject(style, attn="eager")
    inputs, block, src, dst = _case(s, ["ab", "abcdefg"])  # row 0 is right-padded
    assert inputs["attention_mask"][0].sum() < inputs["attention_mask"].shape[1]
    with torch.no_grad():
        clean = s.model(**inputs, output_attentions=True).attentions
        with knocked_out(s, block, [1, 2]):
            out = s.model(**inputs, output_attentions=True)
    att = out.attentions
    for layer in range(len(att)):
        a = att[layer]  # [B, H, T, T]
        n = inputs["attention_mask"].sum(1)
        for b in range(a.shape[0]):
            real = a[b, :, : n[b], : n[b]]
            torch.testing.assert_close(real.sum(-1), torch.ones_like(real.sum(-1)))
            edges = a[b][:, dst[b]][:, :, src[b]]
            if layer in (1, 2):
                assert torch.all(edges == 0.0)  # exactly zero
            else:
                assert torch.equal(a[b], clean[layer][b])  # other layers untouched
                assert torch.all(edges[:, 0] > 0)  # the last token did attend there
    assert not torch.allclose(out.logits, s.model(**inputs).logits)


@pytest.mark.parametrize("prompts", [["ab", "ab"], ["ab", "abcdefg"]], ids=["no-padding", "padding"])
def test_sdpa_gives_the_same_answer_as_eager(prompts):
    eager, sdpa = tiny_subject(attn="eager"), tiny_subject(attn="sdpa")
    inputs, block, _, _ = _case(eager, prompts)
    with torch.no_grad():
        with knocked_out(eager, block, [0, 2]):
            a = eager.model(**inputs).logits
        with knocked_out(sdpa, block, [0, 2]):
            b = sdpa.model(**inputs).logits
        clean = sdpa.model(**inputs).logits
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(a[mask], b[mask], rtol=1e-4, atol=1e-5)
    assert (a[mask] - clean[mask]).abs().max() > 1e-3  # and it did something


def test_reference_style_knockout_is_a_no_op_on_float_masks():
    """llava-interp's hook writes False into the mask it receives: on eager's additive mask False is
    0.0 ('attend'), so nothing is blocked; ours changes the output."""
    s = tiny_subject(attn="eager")
    inputs, block, _, _ = _case(s, ["ab", "abcdefg"])
    parts = language_parts(s.model)

    def reference_hook(_m, args, kwargs):
        m = kwargs["attention_mask"].clone()
        m[:, :, block[0]] = False  # (the reference's indexing, one row's edges)
        kwargs["attention_mask"] = m
        return args, kwargs

    with torch.no_grad():
        clean = s.model(**inputs).logits
        hs = [l.self_attn.register_forward_pre_hook(reference_hook, with_kwargs=True) for l in parts.layers]
        try:
            ref = s.model(**inputs).logits
        finally:
            for h in hs:
                h.remove()
        with knocked_out(s, block, range(len(parts.layers))):
            ours = s.model(**inputs).logits
    torch.testing.assert_close(ref, clean)
    assert (ours - clean).abs().max() > 1e-3


def test_windows_cover_every_layer():
    for n in range(1, 41):
        w = windows(n)
        thirds = w["early"] + w["mid"] + w["late"]
        if n >= 3:
            assert thirds == list(range(n))  # disjoint, contiguous, all covered
        assert set(thirds) == set(range(n)) and w["all"] == list(range(n))
        assert set(w["early-mid"]) == set(w["early"]) | set(w["mid"])
    assert 10 in windows(32)["early"] + windows(32)["mid"]  # the reference's gap
    assert parse_windows("early=0-9, mid=10-20,x=3", 32) == {
        "early": list(range(10)), "mid": list(range(10, 21)), "x": [3]}
    with pytest.raises(UserError, match="past the last"):
        parse_windows("late=21-32", 32)
    with pytest.raises(UserError, match="NAME=LO-HI"):
        parse_windows("late", 32)


def test_refuses_other_attention_and_layers():
    s = tiny_subject(attn="eager")
    with pytest.raises(UserError, match="out of range"):
        with knocked_out(s, torch.zeros(1, 2, 2, dtype=torch.bool), [3]):
            pass
    s.config.text_config._attn_implementation = "flash_attention_2"
    with pytest.raises(UserError, match="eager and sdpa"):
        with knocked_out(s, torch.zeros(1, 2, 2, dtype=torch.bool), [0]):
            pass
