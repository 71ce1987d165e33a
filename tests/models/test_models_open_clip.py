"""open_clip adapter: the real ViT-B-32 architecture with random weights (batch 2, ~5 s)."""

import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.models import load_target
from neuronatlas.models.layout import Layout

torch.set_num_threads(1)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return load_target("open_clip:ViT-B-32/openai", random_weights=True)


def test_preprocess_and_identity(clip):
    assert (clip.family, clip.weights) == ("open_clip", "random")
    assert clip.preprocess.to_json() == {"size": 224, "mean": OPENAI_MEAN, "std": OPENAI_STD,
                                         "resize": 224, "interpolation": "bicubic"}
    assert clip.tokens.grid == (7, 7) and clip.tokens.cls_index == 0
    # the 'openai' tag trains with QuickGELU: the random model must have the same activation
    assert type(clip.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert callable(clip.extras["encode_text"])


def test_hook_points_are_batch_first(clip):
    hp = clip.hook_points
    c_fc = hp["visual.transformer.resblocks.9.mlp.c_fc"]
    assert c_fc.shape == (50, 3072)
    assert c_fc.layout == Layout("tokens", 3072, 50, (7, 7), 0, (), seq_first=False)
    assert hp["visual.transformer.resblocks.3.attn"].layout.n_units == 768  # tuple output
    assert hp["visual.conv1"].layout == Layout("conv", 768, 49, (7, 7))
    assert hp["visual"].layout == Layout("vector", 512, 1)
    assert not any(n.startswith("transformer.") for n in hp)  # the text tower never runs
    assert len(clip.select("visual.transformer.resblocks.*.mlp.c_fc")) == 12


def test_forward_is_encode_image_and_round_trip(clip):
    x = torch.randn(2, 3, 224, 224)
    got = {}
    module = dict(clip.model.named_modules())["visual.transformer.resblocks.9.mlp.c_fc"]
    h = module.register_forward_hook(lambda _m, _i, out: got.setdefault("x", out.clone()))
    with torch.no_grad():
        emb = clip.forward(x)
        ref = clip.model.encode_image(x)
    h.remove()
    assert emb.shape == (2, 512) and torch.allclose(emb, ref)
    lay = clip.hook_points["visual.transformer.resblocks.9.mlp.c_fc"].layout
    acts = lay.canonical(got["x"])
    assert torch.equal(acts, got["x"].permute(0, 2, 1))
    grid = got["x"][:, 1:].reshape(2, 7, 7, 3072).permute(0, 3, 1, 2)
    assert torch.equal(lay.spatial_map(acts), grid)


def test_spec_errors():
    with pytest.raises(UserError, match="did you mean: ViT-B-32"):
        load_target("open_clip:ViT-B-33", random_weights=True)
    with pytest.raises(UserError, match="names no pretrained tag.*datacomp_xl_s13b_b90k"):
        load_target("open_clip:ViT-B-32")
