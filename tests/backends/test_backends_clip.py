"""CLIP-style scorers: open_clip and transformers models become ImageTextScorers (unit-length
embeddings, cosine similarity), load_scorer dispatches on the spec, and cache keys see the weights."""

import pytest
import torch

from neuronatlas.backends import ImageTextScorer, load_scorer
from neuronatlas.backends.clip import HFClipScorer, OpenClipScorer, scorer_from_target
from neuronatlas.errors import UserError
from tests.conftest import tiny_hf_clip_target

torch.set_num_threads(1)

TINY_OPEN_CLIP = {"embed_dim": 16,
                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                 "head_width": 16},
                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                               "layers": 1}}


@pytest.fixture(scope="module")
def open_clip_target():
    import open_clip
    from open_clip import factory

    from neuronatlas.models.open_clip_adapter import target_from_open_clip_model

    factory._MODEL_CONFIGS.setdefault("na-tiny-test", TINY_OPEN_CLIP)
    torch.manual_seed(0)
    model = open_clip.create_model("na-tiny-test", pretrained=None)
    return target_from_open_clip_model(model, spec="open_clip:na-tiny-test",
                                       tokenizer_name="na-tiny-test")


def tiny_hf_target(seed=0):
    return tiny_hf_clip_target(seed)


def char_tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt"):
    ids = [[1 + ord(ch) % 60 for ch in t][:max_length - 1] + [63] for t in texts]
    width = max_length if padding == "max_length" else max(len(x) for x in ids)
    return {"input_ids": torch.tensor([x + [0] * (width - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])}


def check_scorer(scorer: ImageTextScorer):
    assert isinstance(scorer, ImageTextScorer)
    size = getattr(getattr(scorer, "preprocess", None), "size", 32)  # the scorer's own input size
    pixels = torch.randn(3, 3, size, size)
    img = scorer.encode_images(pixels)
    txt = scorer.encode_texts(["a red circle", "a blue star"])
    assert img.shape == (3, scorer.dim) and txt.shape == (2, scorer.dim)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(scorer.similarity(pixels, ["a red circle", "a blue star"]), img @ txt.T,
                          atol=1e-5)
    # batching does not change a text's vector
    assert torch.allclose(scorer.encode_texts(["a blue star"])[0], txt[1], atol=1e-5)


def test_open_clip_scorer(open_clip_target):
    scorer = scorer_from_target(open_clip_target)
    assert isinstance(scorer, OpenClipScorer) and scorer.dim == 16
    check_scorer(scorer)
    assert scorer.describe()["fingerprint"]


def test_hf_clip_scorer_and_weights_in_the_key():
    scorer = scorer_from_target(tiny_hf_target(0), tokenizer=char_tokenizer)
    assert isinstance(scorer, HFClipScorer) and scorer.dim == 16
    check_scorer(scorer)
    other = HFClipScorer(tiny_hf_target(1), char_tokenizer)
    assert scorer.describe()["fingerprint"] != other.describe()["fingerprint"]


def test_siglip_scorer_pads_to_the_full_length():
    import transformers

    from neuronatlas.models.hf_adapter import target_from_hf_model

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = transformers.SiglipConfig(
        text_config=dict(vocab_size=64, max_position_embeddings=16, **small),
        vision_config=dict(image_size=32, patch_size=8, **small))
    target = target_from_hf_model(transformers.SiglipModel(cfg).eval(), spec="hf:<siglip>")
    scorer = scorer_from_target(target, tokenizer=char_tokenizer)
    assert scorer.padding == "max_length" and scorer.dim == 32
    check_scorer(scorer)


def test_load_scorer_builds_from_specs(tmp_path, open_clip_target):
    s = load_scorer("open_clip:na-tiny-test", random_weights=True)  # config registered by the fixture
    assert isinstance(s, OpenClipScorer) and s.dim == 16
    tiny_hf_target(0).model.save_pretrained(tmp_path / "clip")
    s = load_scorer(f"hf:{tmp_path / 'clip'}", tokenizer=char_tokenizer)
    assert isinstance(s, HFClipScorer) and s.name == f"hf:{tmp_path / 'clip'}"
    check_scorer(s)


def test_load_scorer_dispatch(tmp_path):
    with pytest.raises(UserError, match="names no model"):
        load_scorer("hf:")
    with pytest.raises(UserError, match="not an image-text model.*conse:"):
        load_scorer("zoo:mobilenet-v2")


def test_zoo_world_clip_uses_its_own_scorer():
    try:
        scorer = load_scorer("zoo:world-clip")
    except UserError as exc:  # no committed checkpoint in this checkout
        pytest.skip(str(exc))
    assert type(scorer).__name__ == "WorldClipScorer"
    check_scorer(scorer)
