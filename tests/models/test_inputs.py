"""Typed inputs: a Target takes an ImageBatch (pixels + where they come from) or an ImageTextBatch
(+ one prompt: a VLM recorded through its language model), and recording hands it exactly that."""

import numpy as np
import pytest
import torch

import neuronatlas as na
from neuronatlas.errors import UserError
from neuronatlas.models.hf_adapter import target_from_hf_model, target_from_llava
from neuronatlas.models.inputs import ImageBatch, ImageTextBatch
from neuronatlas.models.target import Preprocess, Target

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
LAYER = "model.language_model.layers.0"


def tiny_llava():
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=8)
    text = transformers.LlamaConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                    num_key_value_heads=2, intermediate_size=64, vocab_size=100)
    torch.manual_seed(0)
    cfg = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_id=99)
    return transformers.LlavaForConditionalGeneration(cfg).eval()


def prompt_ids(n_image: int, prompt: str) -> list[int]:
    """A template of this test's own: BOS, the image tokens, then one id per character."""
    return [1] + [99] * n_image + [2 + ord(c) % 90 for c in prompt]


def test_batches_check_their_shapes():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ImageBatch(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="2 indices for 3 images"):
        ImageBatch(torch.zeros(3, 3, 8, 8), np.arange(2))
    b = ImageTextBatch(torch.zeros(2, 3, 8, 8), np.arange(2), prompt="what colour?")
    assert len(b) == 2 and b.to("cpu").prompt == "what colour?" and isinstance(b, ImageBatch)


def test_a_target_refuses_the_wrong_batch_in_one_line():
    m = torch.nn.Conv2d(3, 2, 1)
    image_target = Target("x", m, Preprocess(8, (0.5,) * 3, (0.5,) * 3), m)
    assert isinstance(image_target.make_batch(torch.zeros(1, 3, 8, 8)), ImageBatch)
    vlm = target_from_llava(tiny_llava(), prompt_ids, "is it red?")
    with pytest.raises(UserError) as e:
        vlm.run(ImageBatch(torch.zeros(1, 3, 32, 32)))
    assert "takes images+text (ImageTextBatch)" in str(e.value) and "\n" not in str(e.value)
    batch = vlm.make_batch(torch.zeros(1, 3, 32, 32))
    assert type(batch) is ImageTextBatch and batch.prompt == "is it red?"


def test_a_vlm_target_has_its_language_model_as_hook_points():
    model = tiny_llava()
    images_only = target_from_hf_model(model)
    with_text = target_from_llava(model, prompt_ids, "is it red?")
    assert not any(".language_model." in n for n in images_only.hook_points)
    assert LAYER in with_text.hook_points and "model.language_model.layers.1.mlp" in with_text.hook_points
    n_tokens = 1 + 16 + len("is it red?")
    assert with_text.hook_points[LAYER].shape == (n_tokens, 48)
    # the vision tower is still there, with its CLS + 4x4 grid
    assert with_text.hook_points["model.vision_tower.encoder.layers.0.mlp.fc1"].layout.grid == (4, 4)


def test_recording_a_vlm_with_a_prompt_equals_the_models_hidden_states(tmp_path):
    model = tiny_llava()
    probe = na.open_probe("world:n=10,size=32,seed=2")
    runs, want = {}, {}
    for prompt in ("is it red?", "how many?"):
        target = target_from_llava(model, prompt_ids, prompt)
        runs[prompt] = na.record(target, "world:n=10,size=32,seed=2", tmp_path / prompt.replace(" ", "_"),
                                 layers=LAYER, pooling="mean", k=3, batch_size=4, save_acts=True,
                                 num_workers=0)
        # brute force: the model's own forward with hidden states, mean over every position
        pixels = torch.stack([target.preprocess(probe.read_image(i)) for i in range(10)])
        ids = torch.tensor(prompt_ids(16, prompt)).expand(10, -1)
        with torch.no_grad():
            hs = model(input_ids=ids, pixel_values=pixels, output_hidden_states=True).hidden_states
        want[prompt] = hs[1].mean(1).numpy()  # hidden_states[1]: the output of decoder layer 0
        np.testing.assert_allclose(runs[prompt].acts(LAYER), want[prompt], rtol=1e-4, atol=1e-5)
        assert runs[prompt].meta["model"]["inputs"] == "images+text"
        assert runs[prompt].meta["key"]["model"]["prompt"] == prompt
    # the prompt matters, and another prompt is another recording, not a resume
    assert np.abs(want["is it red?"] - want["how many?"]).max() > 1e-3
    other = target_from_llava(model, prompt_ids, "how many?")
    with pytest.raises(UserError):
        na.record(other, "world:n=10,size=32,seed=2", tmp_path / "is_it_red?", layers=LAYER,
                  pooling="mean", k=3, batch_size=4, save_acts=True, num_workers=0)


def test_image_runs_keep_their_run_json(tmp_path):
    """An image-only run's model entry and key are what they always were (no inputs / prompt)."""
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU())
    target = Target("mine", m, Preprocess(16, (0.5,) * 3, (0.5,) * 3), m)
    run = na.record(target, "world:n=4,size=16", tmp_path / "r", layers="1", k=2, num_workers=0)
    assert "inputs" not in run.meta["model"] and "prompt" not in run.meta["key"]["model"]


PROMPT = "what colour is the circle?"


def test_world_llava_with_a_prompt_records_through_the_cli_and_replays(tmp_path):
    """`zoo:world-llava?prompt=...`: the zoo family's grammar; the run rebuilds it from its spec."""
    import subprocess
    import sys

    from neuronatlas.atlas.exemplars import exemplars
    from neuronatlas.models import load_target
    from neuronatlas.worldmodels.arch.llava import prompt_ids as world_prompt_ids

    spec, layer, data = f"zoo:world-llava?prompt={PROMPT}", "model.language_model.layers.1", \
        "world:n=6,size=64,seed=4"
    r = subprocess.run([sys.executable, "-m", "neuronatlas.cli", "record", spec, "--layers", layer,
                        "--pooling", "mean", "--data", data, "--out", str(tmp_path / "run"),
                        "--k", "2", "--batch-size", "4", "--workers", "0", "--save-acts", "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    run = na.open_run(tmp_path / "run")
    assert run.meta["key"]["model"]["prompt"] == PROMPT and run.meta["model"]["inputs"] == "images+text"
    # brute force: the world model's own forward on its own prompt layout
    plain = load_target("zoo:world-llava", device="cpu")
    model, tok = plain.extras["model"], plain.extras["tokenizer"]
    probe = na.open_probe(data)
    pixels = torch.stack([plain.preprocess(probe.read_image(i)) for i in range(6)])
    ids = torch.tensor(world_prompt_ids(tok, model.config.image_seq_length, PROMPT)).expand(6, -1)
    with torch.no_grad():
        hs = model(input_ids=ids, pixel_values=pixels, output_hidden_states=True).hidden_states
    want = hs[2].mean(1).numpy()  # the output of decoder layer 1
    np.testing.assert_allclose(run.acts(layer), want, rtol=1e-4, atol=1e-4)
    # the atlas's replay rebuilds the prompted model from the spec and gets the same values
    top = exemplars(run, f"{layer}:3", k=2)
    assert [e.index for e in top] == np.argsort(-want[:, 3], kind="stable")[:2].tolist()
    for e in top:
        assert e.recomputed == pytest.approx(e.value, rel=1e-4, abs=1e-4)


def test_a_prompt_for_an_image_model_is_one_line():
    from neuronatlas.models import load_target

    with pytest.raises(UserError) as e:
        load_target("zoo:synthetic-units?prompt=hello", device="cpu")
    assert "takes images only" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="empty prompt"):
        load_target("zoo:world-llava?prompt=", device="cpu")


def save_llava_with_tokenizer(path):
    """A tiny random LLaVA checkpoint with a real (word-level) tokenizer whose <image> token is the
    config's image_token_id, as llava-hf checkpoints ship them."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "USER", ":", "ASSISTANT", "what", "colour", "is", "it", "?", "how", "many"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    model = tiny_llava()
    model.config.image_token_id = fast.convert_tokens_to_ids("<image>")
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return model, fast


def test_an_hf_llava_checkpoint_takes_a_prompt_in_its_spec(tmp_path):
    from neuronatlas.models import load_target

    model, tok = save_llava_with_tokenizer(tmp_path / "llava")
    target = load_target(f"hf:{tmp_path / 'llava'}?prompt=what colour is it?", device="cpu")
    assert target.inputs is ImageTextBatch and target.prompt == "what colour is it?"
    x = torch.randn(2, 3, 32, 32)
    captured = {}
    layer = dict(target.model.named_modules())[LAYER]
    handle = layer.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.no_grad():
        target.run(target.make_batch(x))
    handle.remove()
    text = "USER: " + "<image>" * 16 + "\nwhat colour is it? ASSISTANT:"
    ids = torch.tensor(tok(text)["input_ids"]).expand(2, -1)
    assert (ids[0] == model.config.image_token_id).sum() == 16
    with torch.no_grad():
        want = target.model(input_ids=ids, pixel_values=x, output_hidden_states=True).hidden_states[1]
    out = captured["out"][0] if isinstance(captured["out"], tuple) else captured["out"]
    torch.testing.assert_close(out, want)
    # without its tokenizer a prompt cannot be written: one line that says so
    tiny_llava().save_pretrained(tmp_path / "bare")
    with pytest.raises(UserError, match="a prompt needs the checkpoint's tokenizer"):
        load_target(f"hf:{tmp_path / 'bare'}?prompt=hi", device="cpu")


def test_replay_applies_a_recorded_prompt_the_spec_does_not_carry(tmp_path):
    """A prompted target built in Python under the plain spec `hf:DIR`: the run's key holds the
    prompt, and the replay puts it back (the values it recomputes equal the recorded ones)."""
    from neuronatlas.atlas.exemplars import exemplars
    from neuronatlas.models import load_target
    from neuronatlas.recording.replay import target_for_run

    save_llava_with_tokenizer(tmp_path / "llava")
    spec = f"hf:{tmp_path / 'llava'}"
    target = load_target(spec, device="cpu").prompted("how many ?")
    assert target.spec == spec
    run = na.record(target, "world:n=5,size=32,seed=1", tmp_path / "run", layers=LAYER,
                    pooling="mean", k=2, batch_size=5, num_workers=0)
    again = target_for_run(run)
    assert again.prompt == "how many ?" and again.inputs is ImageTextBatch
    for e in exemplars(run, f"{LAYER}:5", k=2):
        assert e.recomputed == pytest.approx(e.value, rel=1e-4, abs=1e-5)
