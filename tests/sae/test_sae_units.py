"""SAE features as units: a layer recorded in an SAE's basis equals the SAE applied by brute force to
every position of the hook output before pooling; the run rebuilds the SAE for its replays; the CLI's
`record --sae DIR` records the same run as the API; NetDissect labels the features."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import neuronatlas as na
from neuronatlas.recording.replay import views_for_run
from neuronatlas.sae import SAEConfig, build_sae, save_sae
from neuronatlas.sae.basis import SAEEncoder, sae_encoder, sae_layer

LAYER = "conv1"


def random_sae(d_in=8, d_sae=24, arch="topk", seed=0):
    sae = build_sae(SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=3), seed=seed)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(d_sae, generator=torch.Generator().manual_seed(seed)) * 0.05)
        sae.scale.fill_(2.0)
    return sae.eval()


def brute_features(target, probe, sae):
    pixels = torch.stack([target.preprocess(probe.read_image(i)) for i in range(len(probe))])
    out = {}
    module = dict(target.model.named_modules())[LAYER]
    h = module.register_forward_hook(lambda m, i, o: out.update(o=o))
    with torch.no_grad():
        target.model(pixels)
        acts = out["o"].flatten(2).transpose(1, 2)  # (B, S, D): every pixel of the map
        feats = sae.encode(acts)  # (B, S, F)
    h.remove()
    return feats.mean(1).double().numpy()


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_recording_in_an_sae_basis_equals_the_sae_applied_by_brute_force(tmp_path, tiny_cnn_file,
                                                                         arch):
    target = na.load_target(tiny_cnn_file)
    probe = na.open_probe("world:n=20,size=32,seed=5")
    sae = random_sae(arch=arch)
    run = na.record(target, probe, tmp_path / "run", layers=LAYER, pooling="mean", save_acts=True,
                    num_workers=0, k=4, basis={LAYER: SAEEncoder(sae, "sae")})
    want = brute_features(target, probe, sae)
    np.testing.assert_allclose(run.acts(LAYER), want, rtol=1e-4, atol=1e-6)
    assert f"{LAYER}:5@sae" in set(run.units["unit"])
    # the run rebuilds the SAE from its own files for replays
    (view,) = views_for_run(run, target, [LAYER])
    x = torch.randn(6, 8)
    torch.testing.assert_close(view.encoder.encode(x), sae.encode(x), rtol=1e-5, atol=1e-6)


def test_cli_record_with_sae_folder_equals_the_api_and_netdissect_labels_features(tmp_path,
                                                                                tiny_cnn_file):
    sae = random_sae()
    folder = save_sae(sae, tmp_path / "sae", metadata={"hook_name": LAYER},
                      record={"layer": LAYER})
    assert sae_layer(folder) == LAYER
    r = subprocess.run([sys.executable, "-m", "neuronatlas.cli", "record", tiny_cnn_file,
                        "--data", "world:n=20,size=32,seed=5", "--out", str(tmp_path / "cli"),
                        "--layers", LAYER, "--sae", str(folder), "--save-acts", "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    api = na.record(na.load_target(tiny_cnn_file), "world:n=20,size=32,seed=5", tmp_path / "api",
                    layers=LAYER, save_acts=True, num_workers=0,
                    basis={LAYER: sae_encoder(folder)})
    cli = na.open_run(tmp_path / "cli")
    np.testing.assert_allclose(cli.acts(LAYER), api.acts(LAYER), rtol=1e-6, atol=1e-7)
    from neuronatlas.describe import describe

    labels = describe(cli, method="netdissect")
    assert set(labels["unit"]) <= set(cli.units["unit"]) and len(labels)
    assert all(u.endswith("@sae") for u in labels["unit"])
