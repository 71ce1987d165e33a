"""Logit lens: the last layer equals the model's own logits (the final norm applied once, not twice
as in the reference); every layer equals a plain computation from HF's hidden_states; top-k is the
top-k of the full softmax; the image geometry comes from the config."""

from __future__ import annotations

import pytest
import torch

from neuronatlas.vlm.logit_lens import lens_topk, residuals
from neuronatlas.vlm.subject import language_parts

from tests.vlm.tiny import tiny_subject


def _inputs(subject, n=2, prompts=("is there", None)):
    torch.manual_seed(1)
    pixels = torch.randn(n, 3, subject.config.vision_config.image_size, subject.config.vision_config.image_size)
    return subject.inputs(pixels, list(prompts[:n]))


def _world():
    from neuronatlas.vlm.subject import world_llava_subject
    from neuronatlas.worldmodels.arch.checkpoint import load_world_model

    return world_llava_subject(*load_world_model("world-llava"))


SUBJECTS = {"llava-1.5": lambda: tiny_subject("llava-1.5"), "llava-phi": lambda: tiny_subject("llava-phi"),
            "world-llava": _world}


@pytest.mark.parametrize("which", list(SUBJECTS))
def test_last_layer_is_model_logits_and_every_layer_matches_hidden_states(which):
    subject = SUBJECTS[which]()
    inputs = _inputs(subject)
    hs, logits = residuals(subject, inputs)
    parts = language_parts(subject.model)
    assert len(hs) == len(parts.layers) + 1
    k = 5
    probs, ids = lens_topk(subject, hs, k, chunk=7)  # a chunk that does not divide B x T
    # last layer: the model's own output, through the norm exactly once
    ref = torch.softmax(logits.float(), -1).topk(k, -1)
    torch.testing.assert_close(probs[-1], ref.values, rtol=1e-5, atol=1e-6)
    assert torch.equal(ids[-1], ref.indices)
    # every layer: the plain computation from HF's hidden_states (all but the last are un-normed)
    with torch.no_grad():
        out = subject.model(**inputs, output_hidden_states=True)
        hf = out.hidden_states
        assert len(hf) == len(hs)
        for l in range(len(hs)):
            h = hf[l] if l < len(hs) - 1 else hs[l]  # HF's last entry is already normed
            if l < len(hs) - 1:
                torch.testing.assert_close(hs[l], hf[l])
            full = torch.softmax(parts.lm_head(parts.norm(h)).float(), -1)
            top = full.topk(k, -1)
            torch.testing.assert_close(probs[l], top.values, rtol=1e-5, atol=1e-6)
            assert torch.equal(ids[l], top.indices)
        # the reference's bug: norming HF's last hidden state again does not give the model's logits
        twice = torch.softmax(parts.lm_head(parts.norm(hf[-1])).float(), -1)
        assert not torch.allclose(twice, torch.softmax(logits.float(), -1), atol=1e-4)


def test_geometry_read_from_config():
    s = tiny_subject("llava-1.5")
    assert s.grid == 5 and not s.has_cls and s.n_image_tokens == 25
    inputs = _inputs(s, 1)
    assert int((inputs["input_ids"] == s.image_token_id).sum()) == 25
    w = _world()
    g = w.config.vision_config.image_size // w.config.vision_config.patch_size
    assert w.grid == g and w.n_image_tokens == g * g + int(w.has_cls) == w.config.image_seq_length
