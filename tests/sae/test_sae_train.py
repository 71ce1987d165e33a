"""Training: ground truth recovery, the buffer, initialisation, and exact resume after SIGKILL."""

import os
import subprocess
import sys

import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.sae import SAEConfig, TrainConfig
from neuronatlas.sae.buffer import ShuffleBuffer, geometric_median
from neuronatlas.sae.sources import TensorSource
from neuronatlas.sae.trainer import Trainer


def sparse_dictionary_data(d=16, m=32, n=6000, active=2, seed=0):
    """Rows that are sums of `active` unit-norm atoms (of m) with positive coefficients."""
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(m, d, generator=gen)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(m, generator=gen)[:active] for _ in range(n)])
    coef = torch.rand(n, active, generator=gen) * 2 + 0.5
    return torch.zeros(n, m).scatter(1, idx, coef) @ atoms, atoms


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_a_trained_sae_recovers_the_atoms_of_a_known_sparse_dictionary(arch):
    x, atoms = sparse_dictionary_data()
    cfg = SAEConfig(architecture=arch, d_in=16, d_sae=32, k=2)
    train = TrainConfig(lr=3e-3, batch_tokens=128, buffer_tokens=2048, epochs=3, dead_after=3000)
    sae = Trainer(cfg, train, TensorSource(x, 256), None).run()
    decoder = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    best_cos = (atoms @ decoder.T).max(1).values
    assert best_cos.mean() >= 0.9, best_cos
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(32))  # unit-norm decoder rows


def test_the_relu_and_jumprelu_penalties_make_codes_sparse():
    x, _ = sparse_dictionary_data(n=3000)
    for arch, kw in [("relu", {"l1_coeff": 0.5}), ("jumprelu", {"l0_coeff": 0.05})]:
        cfg = SAEConfig(architecture=arch, d_in=16, d_sae=32, **kw)
        train = TrainConfig(lr=3e-3, batch_tokens=128, buffer_tokens=1024, epochs=2)
        sae = Trainer(cfg, train, TensorSource(x, 256), None).run()
        with torch.no_grad():
            f = sae.encode(x[:500])
        assert (f > 0).float().sum(1).mean() < 16, arch  # far fewer than half the features


def test_the_buffer_emits_every_row_once_and_never_holds_more_than_its_capacity():
    buf = ShuffleBuffer(capacity=64, d=1, batch=8, seed=1)
    out = []
    for start in range(0, 300, 25):
        for b in buf.push(torch.arange(start, min(start + 25, 300), dtype=torch.float32)[:, None]):
            assert buf.count <= 64 and len(b) == 8
            out.append(b)
    out += list(buf.drain())
    got = torch.cat(out).flatten()
    assert len(got) == 296  # 300 rows minus the last partial batch of 4
    assert len(set(got.tolist())) == 296
    assert not torch.equal(got, torch.sort(got).values)  # shuffled


def test_geometric_median_minimises_the_sum_of_distances():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen)
    x[:10] += 100  # outliers pull the mean, not the median
    med = geometric_median(x)
    cost = lambda p: (x - p).norm(dim=1).sum()  # noqa: E731
    assert cost(med) < cost(x.mean(0))
    for _ in range(20):
        assert cost(med) <= cost(med + torch.randn(5, generator=gen) * 0.05) + 1e-3


def test_initialisation_scales_rows_to_mean_norm_sqrt_d_and_puts_b_dec_at_the_median():
    x, _ = sparse_dictionary_data(n=2000)
    x = x * 7.0 + 3.0
    trainer = Trainer(SAEConfig(d_in=16, d_sae=32, k=2), TrainConfig(batch_tokens=64,
                      buffer_tokens=512), TensorSource(x), None)
    trainer._initialise(x)
    assert float((x * trainer.sae.scale).norm(dim=1).mean()) == pytest.approx(4.0, rel=1e-4)
    torch.testing.assert_close(trainer.sae.b_dec, geometric_median(x * trainer.sae.scale))


def test_configs_round_trip_and_refuse_bad_values():
    cfg = SAEConfig(architecture="jumprelu", d_in=4, d_sae=8)
    assert SAEConfig.from_json(cfg.to_json()) == cfg
    assert TrainConfig.from_json(TrainConfig(tokens="cls").to_json()) == TrainConfig(tokens="cls")
    with pytest.raises(UserError, match="unknown SAE architecture"):
        SAEConfig(architecture="gated", d_in=4, d_sae=8)
    with pytest.raises(UserError, match="buffer"):
        TrainConfig(batch_tokens=1024, buffer_tokens=1024)
    with pytest.raises(UserError, match="unknown"):
        SAEConfig.from_json({"architecture": "topk", "d_in": 4, "d_sae": 8, "bogus": 1})


def _train_cmd(model, out):
    return [sys.executable, "-m", "neuronatlas.cli", "sae", "train", model, "--layer", "conv1",
            "--data", "world:n=24,size=32", "--out", str(out), "--k", "4", "--expansion", "4",
            "--batch-tokens", "512", "--buffer-tokens", "4096", "--epochs", "2",
            "--image-batch", "4", "--checkpoint-every", "3", "--eval-images", "8", "-q"]


def test_training_killed_at_a_checkpoint_resumes_to_the_same_weights(tmp_path, tiny_cnn_file):
    from safetensors.torch import load_file

    env = {**os.environ, "NEURONATLAS_FAULT": "sae.checkpoint@2"}
    killed = subprocess.run(_train_cmd(tiny_cnn_file, tmp_path / "a"), env=env, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    assert (tmp_path / "a" / "checkpoint.pt").exists() and not (tmp_path / "a" / "cfg.json").exists()
    env.pop("NEURONATLAS_FAULT")
    resumed = subprocess.run(_train_cmd(tiny_cnn_file, tmp_path / "a"), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run(_train_cmd(tiny_cnn_file, tmp_path / "b"), env=env, capture_output=True,
                           text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    a = load_file(tmp_path / "a" / "sae_weights.safetensors")
    b = load_file(tmp_path / "b" / "sae_weights.safetensors")
    for name in b:
        assert torch.equal(a[name], b[name]), name
    assert "FVE" in whole.stdout and not (tmp_path / "b" / "checkpoint.pt").exists()
    # other settings on the same folder are refused, in one line
    other = _train_cmd(tiny_cnn_file, tmp_path / "b")
    other[other.index("--k") + 1] = "2"
    r = subprocess.run(other, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "other settings" in r.stderr and "Traceback" not in r.stderr
