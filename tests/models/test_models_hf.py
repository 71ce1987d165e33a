"""transformers adapter on tiny random configs: CLIP, SigLIP, DINOv2 (+ registers), ViT, LLaVA."""

import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.models import load_target
from neuronatlas.models.hf_adapter import preprocess_from_json, target_from_hf_model
from neuronatlas.models.layout import Layout

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)

V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
         image_size=32, patch_size=8)  # a 4x4 patch grid
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


def tiny_clip():
    t = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
             vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return transformers.CLIPModel(transformers.CLIPConfig(vision_config=V, text_config=t,
                                                          projection_dim=16))


def tiny_llava():
    text = transformers.LlamaConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=2, intermediate_size=64, vocab_size=100)
    cfg = transformers.LlavaConfig(vision_config=transformers.CLIPVisionConfig(**V), text_config=text,
                                   image_token_id=99)
    return transformers.LlavaForConditionalGeneration(cfg)


def tokens_of(t, name):
    lay = t.hook_points[name].layout
    return lay.kind, lay.n_units, lay.n_positions, lay.grid, lay.cls_index, lay.register_indices


def test_clip_model_records_the_vision_tower_only():
    torch.manual_seed(0)
    t = target_from_hf_model(tiny_clip())
    assert t.spec == "hf:<in-memory>" and t.family == "hf"
    assert (t.preprocess.size, t.preprocess.resize, t.preprocess.mean) == (32, 32, OPENAI_MEAN)
    assert tokens_of(t, "vision_model.encoder.layers.1.mlp.fc1") == ("tokens", 64, 17, (4, 4), 0, ())
    assert t.hook_points["vision_model.embeddings.patch_embedding"].layout.grid == (4, 4)
    assert t.hook_points["visual_projection"].layout == Layout("vector", 16, 1)
    assert t.hook_points["vision_model.encoder.layers.0.self_attn"].shape == (17, 32)
    assert not any(n.startswith("text_model") for n in t.hook_points)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # 5.x returns an output object: the adapter hands back the embedding
        assert torch.allclose(t.forward(x), t.model.get_image_features(pixel_values=x).pooler_output)
    assert "get_text_features" in t.extras


@pytest.mark.parametrize("kind", ["clip", "siglip", "dinov2", "dinov2_reg", "vit"])
def test_vision_models(kind):
    torch.manual_seed(0)
    T = transformers
    model, name, expect = {
        "clip": (T.CLIPVisionModel(T.CLIPVisionConfig(**V)), "encoder.layers.1.mlp.fc1",
                 ("tokens", 64, 17, (4, 4), 0, ())),
        "siglip": (T.SiglipVisionModel(T.SiglipVisionConfig(**V)), "encoder.layers.1.mlp.fc1",
                   ("tokens", 64, 16, (4, 4), None, ())),
        "dinov2": (T.Dinov2Model(T.Dinov2Config(**V)), "encoder.layer.1.mlp.fc1",
                   ("tokens", 128, 17, (4, 4), 0, ())),
        "dinov2_reg": (T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(**V, num_register_tokens=4)),
                       "encoder.layer.1.mlp.fc1", ("tokens", 128, 21, (4, 4), 0, (1, 2, 3, 4))),
        "vit": (T.ViTModel(T.ViTConfig(**V)), "layers.1.mlp.fc1", ("tokens", 64, 17, (4, 4), 0, ())),
    }[kind]
    t = target_from_hf_model(model)
    assert tokens_of(t, name) == expect
    n_prefix = expect[2] - 16
    x = torch.randn(2, 3, 32, 32)
    got = {}
    h = dict(model.named_modules())[name].register_forward_hook(
        lambda _m, _i, o: got.setdefault("x", o.clone()))
    with torch.no_grad():
        out = t.forward(x)
    h.remove()
    assert out.last_hidden_state.shape[1] == expect[2]
    lay = t.hook_points[name].layout
    patches = got["x"][:, n_prefix:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    assert torch.equal(lay.spatial_map(lay.canonical(got["x"])), patches)


def test_siglip_head_gets_no_invented_grid():
    t = target_from_hf_model(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**V)))
    p = t.preprocess
    assert (p.size, p.resize, p.mean, p.interpolation) == (32, None, (0.5,) * 3, "bicubic")
    assert tokens_of(t, "head.mlp.fc1")[2:4] == (1, None)  # the attention-pool query
    assert t.hook_points["head"].layout.kind == "vector"


def test_default_preprocessing_per_family():
    T = transformers
    dino = target_from_hf_model(T.Dinov2Model(T.Dinov2Config(**V))).preprocess
    assert dino.mean == (0.485, 0.456, 0.406) and dino.resize == round(32 * 256 / 224)
    vit = target_from_hf_model(T.ViTModel(T.ViTConfig(**V))).preprocess
    assert (vit.mean, vit.resize, vit.interpolation) == ((0.5,) * 3, None, "bilinear")


def test_llava_vision_tower_and_projector():
    torch.manual_seed(0)
    t = target_from_hf_model(tiny_llava())
    assert t.tokens.cls_index == 0 and t.preprocess.mean == OPENAI_MEAN
    assert tokens_of(t, "model.vision_tower.encoder.layers.0.mlp.fc1") == ("tokens", 64, 17, (4, 4),
                                                                          0, ())
    # the default feature strategy drops CLS: the projector sees the 16 patches only
    assert tokens_of(t, "model.multi_modal_projector.linear_2") == ("tokens", 48, 16, (4, 4), None, ())
    assert not any(".language_model." in n or n.startswith("lm_head") for n in t.hook_points)
    with torch.no_grad():
        out = t.forward(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 16, 48)


def test_preprocess_from_json_forms():
    clip = preprocess_from_json({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
                                 "do_center_crop": True, "image_mean": OPENAI_MEAN,
                                 "image_std": (0.3,) * 3, "resample": 3})
    assert (clip.size, clip.resize, clip.interpolation) == (224, 224, "bicubic")
    dino = preprocess_from_json({"size": {"shortest_edge": 256}, "crop_size": 224, "do_center_crop": True,
                                 "image_mean": (0.485, 0.456, 0.406), "image_std": (0.2,) * 3})
    assert (dino.size, dino.resize) == (224, 256)
    siglip = preprocess_from_json({"size": {"height": 384, "width": 384}, "image_mean": (0.5,) * 3,
                                   "image_std": (0.5,) * 3, "resample": 2})
    assert (siglip.size, siglip.resize, siglip.interpolation) == (384, None, "bilinear")


def test_hf_local_directory(tmp_path):
    torch.manual_seed(0)
    model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**V))
    model.save_pretrained(tmp_path)
    transformers.CLIPImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                                    image_mean=[0.1, 0.2, 0.3]).save_pretrained(tmp_path)
    t = load_target(f"hf:{tmp_path}")
    assert t.weights == str(tmp_path) and t.family == "hf"
    assert (t.preprocess.size, t.preprocess.resize, t.preprocess.mean) == (32, 36, (0.1, 0.2, 0.3))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(t.forward(x).last_hidden_state, model(pixel_values=x).last_hidden_state)
    r = load_target(f"hf:{tmp_path}", random_weights=True)
    assert r.weights == "random" and r.hook_points["encoder.layers.1.mlp.fc1"].layout.grid == (4, 4)
    with pytest.raises(UserError, match="no directory"):
        load_target(f"hf:{tmp_path}/missing/dir")


def test_hf_local_llava_uses_its_architecture_class(tmp_path):
    tiny_llava().save_pretrained(tmp_path)
    t = load_target(f"hf:{tmp_path}", random_weights=True)
    assert type(t.model).__name__ == "LlavaForConditionalGeneration"
    assert tokens_of(t, "model.multi_modal_projector.linear_2")[2:5] == (16, (4, 4), None)


def test_classifier_class_names_from_id2label():
    cfg = transformers.ViTConfig(**V, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    t = target_from_hf_model(transformers.ViTForImageClassification(cfg))
    assert t.class_names == ["cat", "dog"] and t.hook_points["classifier"].layout.n_units == 2
