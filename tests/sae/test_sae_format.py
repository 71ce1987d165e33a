"""SAELens's on-disk format, checked against the real sae-lens package in both directions."""

import json
import subprocess
import sys

import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.sae import SAEConfig, build_sae, load_sae, save_sae

sae_lens = pytest.importorskip("sae_lens")

ARCHS = ["topk", "relu", "jumprelu", "batchtopk"]


def _random_sae(arch: str, d_in=12, d_sae=40, seed=0):
    sae = build_sae(SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=5), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.1)
        sae.b_dec.copy_(torch.randn(d_in, generator=gen))
        sae.scale.fill_(0.37)  # an input scale that must be folded into the files
        if arch == "jumprelu":
            sae.log_threshold.copy_((torch.rand(d_sae, generator=gen) * 0.5 + 0.05).log())
        if arch == "batchtopk":
            sae.threshold.fill_(0.2)
    return sae.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_ours_load_in_sae_lens_with_the_same_encoding_and_decoding(tmp_path, arch):
    ours = _random_sae(arch)
    save_sae(ours, tmp_path, metadata={"model_name": "test", "hook_name": "blocks.0"})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path))
    x = torch.randn(64, 12) * 3
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        assert (f_ours > 0).sum() > 0
        torch.testing.assert_close(f_theirs, f_ours, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.decode(f_theirs), ours.decode(f_ours), rtol=1e-5, atol=1e-5)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.0"
    # and back: our loader rebuilds the same architecture from our own folder
    again = load_sae(tmp_path)
    assert again.cfg.architecture == arch
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x), f_ours, rtol=1e-5, atol=1e-5)


def _their_sae(kind: str, **extra):
    cls, cfg_cls = {"topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig),
                    "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig),
                    "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig)}[kind]
    kw = {"k": 4} if kind == "topk" else {}
    sae = cls(cfg_cls(d_in=10, d_sae=30, **kw, **extra))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if name != "threshold" else 0.1).__abs__())
        if kind == "jumprelu":
            sae.threshold.abs_()
    return sae


@pytest.mark.parametrize("kind,extra", [("topk", {}), ("standard", {}), ("jumprelu", {}),
                                        ("standard", {"apply_b_dec_to_input": False}),
                                        ("topk", {"rescale_acts_by_decoder_norm": True})])
def test_sae_lens_files_load_in_ours_with_the_same_encoding_and_decoding(tmp_path, kind, extra):
    theirs = _their_sae(kind, **extra)
    theirs.save_model(str(tmp_path))
    ours = load_sae(tmp_path)
    x = torch.randn(50, 10) * 2
    with torch.no_grad():
        f = theirs.encode(x)
        assert (f > 0).any()
        torch.testing.assert_close(ours.encode(x), f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.decode(ours.encode(x)), theirs.decode(f), rtol=1e-5, atol=1e-5)


def test_a_pre_6_flat_config_loads(tmp_path):
    theirs = _their_sae("topk")
    theirs.save_model(str(tmp_path))
    flat = {"d_in": 10, "d_sae": 30, "architecture": "standard", "activation_fn_str": "topk",
            "activation_fn_kwargs": {"k": 4}, "apply_b_dec_to_input": True, "dtype": "float32",
            "hook_point": "blocks.0.hook_resid_post", "normalize_activations": "none",
            "sae_lens_training_version": "3.0.0"}
    (tmp_path / "cfg.json").write_text(json.dumps(flat))
    ours = load_sae(tmp_path)
    x = torch.randn(20, 10)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), rtol=1e-5, atol=1e-5)


def test_bad_sources_give_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_sae(tmp_path / "nope")
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot be read"):
        load_sae(tmp_path)


def test_a_hub_id_is_fetched_and_offline_says_so_in_one_line(tmp_path):
    # no hub here: the real download code runs and fails; the CLI says so in one line
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "neuronatlas.cli", "sae", "info",
                        "some-org/some-saes:layer_3"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "from the hub" in lines[0] and "local folder" in lines[0]
