"""Neuron-guided adversarial images: word choice, prompts, the world backend, the success check."""

import numpy as np
import pytest

from neuronatlas.errors import UserError
from neuronatlas.lens.adversarial import (AdversarialConfig, TemplatePromptWriter, WorldTextToImage,
                                          drop_similar, guiding_words, load_text_to_image,
                                          neuron_push, success_rates)


def test_neuron_push_and_guiding_words_hand_computed():
    pcs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    d = np.array([1.0, -1.0])  # push: 1, -1, -0.2
    np.testing.assert_allclose(neuron_push(pcs, d), [1, -1, -0.2])
    terms = [[("red", 2.0), ("stripes", 0.5)],      # neuron 0, push +1
             [("blue", 1.0), ("stripes", -1.0)],    # neuron 1, push -1
             [("red", 10.0)]]                       # neuron 2, push -0.2: not among the top 2
    words = guiding_words(pcs, terms, d, n_neurons=2, n_words=5)
    # red: 2*1 ; stripes: 0.5*1 + (-1)*(-1) = 1.5 ; blue: 1*(-1) < 0 dropped
    assert words == [("red", 2.0), ("stripes", 1.5)]
    assert guiding_words(pcs, terms, d, 3, 5) == [("stripes", 1.5)]  # red: 2 - 2 = 0, not > 0
    assert guiding_words(pcs, terms, d, 2, 5, exclude=["RED"]) == [("stripes", 1.5)]
    with pytest.raises(UserError, match="decompositions"):
        guiding_words(pcs, terms[:2], d, 2, 5)
    with pytest.raises(UserError, match="dimensions"):
        neuron_push(pcs, np.ones(3))


def test_success_rates_hand_computed():
    cls = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])  # source 0, target 1
    img = np.array([[0.9, 0.1, 0], [0.4, 0.6, 0], [0.1, 0.3, 0.9], [0, 2, 0]])
    r = success_rates(img, cls, source=0, target=1)
    # img . (e1 - e0) > 0 for rows 1, 2, 3; argmax = target for rows 1, 3; source for row 0
    assert r == {"direction": 0.75, "classified": 0.5, "kept_source": 0.25, "n_images": 4}


def test_prompt_writer_is_seeded_and_names_source():
    words = [("striped", 3.0), ("noisy", 2.0), ("small", 1.0), ("dotted", 0.5)]
    a = TemplatePromptWriter(2, seed=1).write("a star", words, 5)
    assert a == TemplatePromptWriter(2, seed=1).write("a star", words, 5)
    assert all(p.startswith("a star, ") and len(p.split(", ")) == 3 for p in a)
    assert len({w for p in a for w in p.split(", ")[1:]}) >= 2


def test_world_backend_parses_and_renders_named_concepts():
    from neuronatlas.data.world import render, sample_scene

    be = WorldTextToImage(size=32)
    named = be.parse("a photo of a red star, horizontally striped, noisy, cyan, small thing")
    assert named == {"color": ["red", "cyan"], "shape": ["star"], "texture": ["hstripes"],
                     "background": ["noise"], "size": ["small"]}
    opts = be.options("a photo of a green circle, grass, sand")
    assert opts.shapes == ("circle",) and opts.colors == ("green",)
    assert opts.backgrounds == ("sand",)  # grass would hide a green object
    images = be.generate(["a photo of a blue heart, dotted"], n=3, seed=0)
    assert len(images) == 1 and len(images[0]) == 3 and images[0][0].size == (32, 32)
    # the images are the world's own renders of scenes with the named concepts
    scene = sample_scene(0, 0, be.options("a photo of a blue heart, dotted"))
    assert scene.objects[0].shape == "heart" and scene.objects[0].color == "blue"
    assert scene.objects[0].texture == "dotted"
    np.testing.assert_array_equal(np.asarray(images[0][0]), np.asarray(render(scene, 32)[0]))


def test_drop_similar_uses_embedder():
    class Fixed:
        def embed(self, texts):
            import torch

            table = {"cat": [1.0, 0], "kitten": [0.9, 0.436], "car": [0, 1.0]}
            return torch.tensor([table[t] for t in texts])
    kept = drop_similar([("kitten", 2.0), ("car", 1.0)], "cat", Fixed(), 0.6)
    assert kept == [("car", 1.0)]


def test_backend_specs_and_config_errors():
    assert isinstance(load_text_to_image("world:48"), WorldTextToImage)
    assert load_text_to_image("world:48").size == 48
    with pytest.raises(UserError, match="unknown text-to-image"):
        load_text_to_image("dalle")
    try:
        import diffusers  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install diffusers"):
            load_text_to_image("diffusers:some/model")
    with pytest.raises(UserError):
        AdversarialConfig(n_neurons=0)


# -- end to end on world-clip with the world renderer ------------------------------------------------
from lens_apps_fixtures import world_clip_lens_run  # noqa: E402,F401


def test_adversarial_from_run_saves_images_and_rechecks(world_clip_lens_run):
    import json

    import torch
    from PIL import Image

    from neuronatlas.lens.adversarial import AdversarialConfig, adversarial_from_run
    from neuronatlas.describe.text_decomposition import model_of
    from neuronatlas.lens.segmentation import class_set

    out, results = world_clip_lens_run
    cfg = AdversarialConfig(n_neurons=30, n_words=8, n_prompts=3, images_per_prompt=2)
    res = adversarial_from_run(out, "star", "circle", "world-shapes", "world:32", cfg, progress=False)
    assert res.words and all(w.lower() not in ("star", "circle") for w, _ in res.words)
    assert [s for _, s in res.words] == sorted((s for _, s in res.words), reverse=True)
    assert all(p.startswith("a star, ") for p in res.prompts + res.baseline_prompts)
    folder = out / "lens" / "apps" / "adversarial" / "star-to-circle"
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["images"]) == 6 and summary["rates"]["n_images"] == 6
    # recheck the success rates from the saved images with the same CLIP
    _, scorer = model_of(results[0])
    names, prompts = class_set("world-shapes")
    cls = scorer.encode_texts(prompts).numpy()
    with torch.no_grad():
        pix = torch.stack([scorer.preprocess(Image.open(folder / f).convert("RGB"))
                           for f in summary["images"]])
        emb = scorer.encode_images(pix).numpy()
    d = cls[names.index("circle")] - cls[names.index("star")]
    assert np.mean(emb @ d > 0) == pytest.approx(summary["rates"]["direction"])
    assert np.mean((emb @ cls.T).argmax(1) == names.index("circle")) == \
        pytest.approx(summary["rates"]["classified"])
    with pytest.raises(UserError, match="not among the classes"):
        adversarial_from_run(out, "star", "zebra", "world-shapes", "world:32", cfg, save=False,
                             progress=False)
