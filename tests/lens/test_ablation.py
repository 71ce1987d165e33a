"""The ablation suite against ground truth: a real (frozen-statistics) intervention, identities
between the conditions, and zero-shot accuracy computed independently."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuronatlas.errors import UserError
from neuronatlas.lens import (CONDITIONS, AblationStats, ClipViT, SecondOrderConfig, SecondOrderLens,
                              ablated_embeddings, compute_second_order, load_lens, zero_shot_ablations,
                              zero_shot_task)

LAYER = 1


@pytest.fixture(scope="module")
def setup(world_clip_target):
    """A float64 world-clip lens, images, and statistics from other images (so effects differ)."""
    vit = ClipViT.from_model(copy.deepcopy(world_clip_target.model).double())
    lens = SecondOrderLens(vit, LAYER)
    g = torch.Generator().manual_seed(0)
    s = world_clip_target.model.config.vision_config.image_size
    fit = torch.randn(24, 3, s, s, generator=g, dtype=torch.float64)
    px = torch.randn(4, 3, s, s, generator=g, dtype=torch.float64)
    cf = lens.coefficients(fit).coef_BNK
    mean = cf.mean(0)
    u = lens.head_vectors
    norms = torch.einsum("bnk,knd->bnd", cf - mean, u).norm(dim=-1)
    threshold = norms.sort(0, descending=True).values[4]  # top-5 of 24
    pc = F.normalize(torch.randn(lens.n_neurons, lens.out_dim, generator=g, dtype=torch.float64), dim=-1)
    stats = AblationStats(mean, threshold, pc, u)
    return vit, lens, px, stats


def test_mean_ablation_equals_a_real_intervention(setup, frozen_intervention):
    """Removing every neuron's write from the later heads' values (frozen attention and LN std)
    and adding back the mean effects gives the mean_all embedding."""
    vit, lens, px, stats = setup
    co = lens.coefficients(px)
    all_neurons = list(range(lens.n_neurons))
    removed = frozen_intervention(vit, px, LAYER, all_neurons, co.scale)  # (B, D) clean - ablated
    mean_effect = torch.einsum("nk,knd->d", stats.mean_coefficient, stats.head_vectors)
    truth = co.scaled_embedding - removed + mean_effect
    got = ablated_embeddings(co, stats, "mean_all")
    assert torch.allclose(got, truth, atol=1e-8 * truth.abs().max().item())


def test_significant_ablations_equal_per_image_interventions(setup, frozen_intervention):
    vit, lens, px, stats = setup
    co = lens.coefficients(px)
    eff = lens.effects(co)  # (B, N, D)
    mean = torch.einsum("nk,knd->nd", stats.mean_coefficient, stats.head_vectors)
    sig = (eff - mean).norm(dim=-1) >= stats.threshold
    assert sig.any() and not sig.all()
    got_sig = ablated_embeddings(co, stats, "mean_significant")
    got_keep = ablated_embeddings(co, stats, "keep_significant")
    for i in range(px.shape[0]):
        for got, chosen in ((got_sig, sig[i]), (got_keep, ~sig[i])):
            neurons = torch.nonzero(chosen).flatten().tolist()
            removed = frozen_intervention(vit, px[i:i + 1], LAYER, neurons, co.scale[i:i + 1])[0]
            truth = co.scaled_embedding[i] - removed + mean[neurons].sum(0)
            assert torch.allclose(got[i], truth, atol=1e-8 * truth.abs().max().item())
    # the two halves together are the full mean-ablation
    both = got_sig + got_keep - co.scaled_embedding
    assert torch.allclose(both, ablated_embeddings(co, stats, "mean_all"), atol=1e-9)


def test_full_and_pc_projection(setup):
    _, lens, px, stats = setup
    co = lens.coefficients(px)
    base = ablated_embeddings(co, stats, "baseline")
    assert torch.equal(ablated_embeddings(co, stats, "full"), base)
    assert torch.allclose(base, co.scaled_embedding)
    # with every PC along image 0's own centred effect, projecting changes nothing for image 0
    eff = lens.effects(co)
    mean = torch.einsum("nk,knd->nd", stats.mean_coefficient, stats.head_vectors)
    own = AblationStats(stats.mean_coefficient, stats.threshold, F.normalize(eff[0] - mean, dim=-1),
                        stats.head_vectors)
    pcp = ablated_embeddings(co, own, "pc_projection")
    assert torch.allclose(pcp[0], base[0], atol=1e-9 * base.abs().max().item())
    # brute force for the other images: e - sum_n (c_n - (c_n . pc) pc)
    c = eff - mean
    pc = own.pc
    truth = base - (c - (c * pc).sum(-1, keepdim=True) * pc).sum(1)
    assert torch.allclose(pcp, truth, atol=1e-9 * base.abs().max().item())
    with pytest.raises(UserError, match="unknown ablation"):
        ablated_embeddings(co, stats, "zero")


def test_zero_shot_ablations_on_world_clip(tmp_path, world_clip_target):
    cfg = SecondOrderConfig(layer="2", top_k=10, num_workers=0)
    res = compute_second_order(world_clip_target, "world:n=120,size=32,seed=4", tmp_path, cfg,
                               show_progress=False)
    target, lens = load_lens(world_clip_target, cfg)
    evalset = "world:n=96,size=32,seed=999,objects=1"
    df = zero_shot_ablations(lens, target, res, evalset, "world-color", batch_size=32, num_workers=0,
                             show_progress=False)
    acc = dict(zip(df["condition"], df["accuracy"]))
    assert list(df["condition"]) == list(CONDITIONS) and (df["n"] == 96).all()
    # baseline accuracy computed independently with the world-clip scorer
    from neuronatlas.data import open_probe
    from neuronatlas.worldmodels.train import data as D

    probe = open_probe(evalset)
    scorer = world_clip_target.extras["scorer"]
    px = torch.stack([world_clip_target.preprocess(probe.read_image(i)) for i in range(len(probe))])
    sims = scorer.similarity(px, [f"a {c} thing" for c in D.NAMES["color"]])
    truth = np.array([D.NAMES["color"].index(probe.scene(i).objects[0].color) for i in range(len(probe))])
    expect = float((sims.argmax(1).numpy() == truth).mean())
    assert acc["baseline"] == pytest.approx(expect) and acc["full"] == acc["baseline"]
    assert expect > 0.5  # world-clip knows colours: the task is meaningful
    assert all(0 <= a <= 1 for a in acc.values())


def test_task_errors(world_clip_target, image_folder):
    from neuronatlas.data import open_probe

    with pytest.raises(UserError, match="needs a world probe set"):
        zero_shot_task("world-color", open_probe(image_folder))
    with pytest.raises(UserError, match="unknown zero-shot task"):
        zero_shot_task("cifar", open_probe(image_folder))
    with pytest.raises(UserError, match="ImageNet class name"):
        zero_shot_task("imagenet", open_probe(image_folder))
    t = zero_shot_task("labels", open_probe(image_folder))
    assert t.classes == ["a", "b"] and set(t.labels) == {0, 1}


def test_imagenet_labels_and_open_clip_text_tower(tmp_path, b32_target):
    """ImageNet class folders map to class indices; the ablation suite runs through open_clip's own
    tokenizer and text tower (random ViT-B-32, class prompts of the probe's labels)."""
    from neuronatlas.concepts import imagenet_classes
    from neuronatlas.data import open_probe
    from tests.conftest import make_images

    names = imagenet_classes()
    make_images(tmp_path / "imgs", 6, size=48, classes=(names[1], names[7], "not a class"))
    probe = open_probe(tmp_path / "imgs")
    task = zero_shot_task("imagenet", probe)
    assert len(task.classes) == 1000 and len(task.prompts[0]) == 7
    expect = {names[1]: 1, names[7]: 7, "not a class": -1}
    assert list(task.labels) == [expect[it.label] for it in probe.items]
    cfg = SecondOrderConfig(layer="10", top_k=3, num_workers=0)
    res = compute_second_order(b32_target, probe, tmp_path / "run", cfg, show_progress=False)
    _, lens = load_lens(b32_target, cfg)
    df = zero_shot_ablations(lens, b32_target, res, probe, "labels", num_workers=0, show_progress=False)
    assert (df["n"] == 6).all() and df["accuracy"].between(0, 1).all()
    acc = dict(zip(df["condition"], df["accuracy"]))
    assert acc["full"] == acc["baseline"]


def test_effects_next_to_a_recording_of_another_model_are_refused(tmp_path, world_clip_target,
                                                                   tiny_cnn_file, image_folder):
    import neuronatlas as na

    na.record(tiny_cnn_file, image_folder, tmp_path, na.RecordConfig(layers=("conv1",), num_workers=0),
              show_progress=False)
    with pytest.raises(UserError, match="recording of .*unit ids would not match"):
        compute_second_order(world_clip_target, image_folder, tmp_path,
                             SecondOrderConfig(layer="1", top_k=3, num_workers=0), show_progress=False)
