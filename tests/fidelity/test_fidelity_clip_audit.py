"""Top-k / bottom-k exemplars through `record()` against CLIP_AUDIT's computation
(soniajoseph/CLIP_AUDIT, clip_audit/get_max_images_iterative.py at b3d548a), written step by step:

- the (B, tokens, d) output of a block (`hook_resid_post`) and of its MLP (`hook_mlp_out`);
- pooling `max` (max over all tokens, CLS included), `avg` (mean over all tokens), `max_cls` (the
  CLS token's value): ours `max`, `mean`, `cls`;
- a running top-K (K = 20): the kept values concatenated with the batch's, then `torch.topk`;
  bottom-K the same on negated values; 30 random units per layer; image indices in data order;
  full batches only (the probe set here is a whole number of batches).

Inputs of the reference's kind: a ViT (timm vit_tiny_patch16_224, random weights; the reference uses a
Prisma HookedViT of CLIP B/32) over procedural-world images, batches of 32.

Departure on purpose, measured below: the reference's bottom-K keeps its buffer un-negated but
merges it with the next batch's negated values, so after the first batch its "bottom" lists are not
the minima; ours are the true minima.
"""

import numpy as np
import pytest
import torch

import neuronatlas as na

N, BATCH, K = 64, 32, 20
PROBE = f"world:n={N},size=64,seed=3"
LAYERS = {"blocks.5": "hook_resid_post", "blocks.5.mlp": "hook_mlp_out"}
POOL = {"max": lambda a: a.max(1)[0], "mean": lambda a: a.mean(1), "cls": lambda a: a[:, 0]}


@pytest.fixture(scope="module")
def vit():
    from neuronatlas.models import load_target

    torch.manual_seed(0)
    return load_target("timm:vit_tiny_patch16_224", random_weights=True)


def reference_extremes(model, probe, transform, layer, pool, units):
    """CLIP_AUDIT's loop for one hook and pooling: (top values, top indices, buggy bottom values,
    buggy bottom indices), each (units, K)."""
    modules = dict(model.named_modules())
    grabbed = []
    hook = modules[layer].register_forward_hook(lambda m, i, o: grabbed.append(o.detach()))
    store = {w: (torch.full((len(units), K), float("-inf")), torch.zeros((len(units), K), dtype=torch.long))
             for w in ("top", "bottom")}
    try:
        with torch.no_grad():
            for b in range(N // BATCH):
                x = torch.stack([transform(probe.read_image(i).convert("RGB"))
                                 for i in range(b * BATCH, (b + 1) * BATCH)])
                grabbed.clear()
                model(x)
                sel = pool(grabbed[0])[:, units].T  # (units, B)
                for w in ("top", "bottom"):
                    vals, idx = store[w]
                    new = sel if w == "top" else -sel
                    comb = torch.cat([vals, new], 1)
                    comb_i = torch.cat([idx, torch.arange(b * BATCH, (b + 1) * BATCH).repeat(len(units), 1)], 1)
                    v, pos = torch.topk(comb, k=K, dim=1, largest=True)
                    if w == "bottom":
                        v = -v  # stored un-negated, merged negated next time: the reference's bug
                    store[w] = (v, comb_i.gather(1, pos))
    finally:
        hook.remove()
    return (*store["top"], *store["bottom"])


@pytest.mark.parametrize("pooling", ["max", "mean", "cls"])
def test_top_and_bottom_k_equal_the_reference(vit, tmp_path, pooling):
    run = na.record(vit, PROBE, tmp_path / "run", layers=",".join(LAYERS), pooling=pooling, k=K,
                    batch_size=BATCH, num_workers=0, save_acts=True)
    probe = na.open_probe(PROBE)
    transform = vit.preprocess.transform()
    rng = np.random.default_rng(0)
    wrong_bottom = total = 0
    for layer in LAYERS:
        n_units = int((run.units["layer"] == layer).sum())
        units = np.sort(rng.choice(n_units, 30, replace=False))  # get_neuron_indices: 30 at random
        top_v, top_i, bad_v, bad_i = reference_extremes(vit.model, probe, transform, layer,
                                                        POOL[pooling], torch.as_tensor(units))
        acts = np.asarray(run.acts(layer))  # the whole pooled matrix: the true minima
        for j, u in enumerate(units):
            t = run.topk(f"{layer}:{u}", K)
            np.testing.assert_array_equal(t["index"].to_numpy(), top_i[j].numpy(), err_msg=f"{layer}:{u}")
            np.testing.assert_allclose(t["value"].to_numpy(), top_v[j].numpy(), rtol=1e-5, atol=1e-5)
            bot = run.bottomk(f"{layer}:{u}", K)
            np.testing.assert_array_equal(bot["index"].to_numpy(),
                                          np.argsort(acts[:, u], kind="stable")[:K])
            wrong_bottom += int(set(bot["index"]) != set(bad_i[j].tolist()))
            total += 1
    print(f"{pooling}: the reference's bottom-{K} lists differ from the true minima on "
          f"{wrong_bottom}/{total} units")
    assert wrong_bottom > total // 2  # the bug shows after the first batch
