"""Unit bases: a layer recorded in the basis of a random linear encoder (a real timm ViT with random
weights) equals recording the raw hook output and applying the encoder by brute force, position by
position before pooling; ids `LAYER:INDEX@NAME` round-trip; the atlas's replay, describe and
evaluate work on features unchanged; another encoder is another run."""

import numpy as np
import pytest
import torch

import neuronatlas as na
from neuronatlas.errors import UserError
from neuronatlas.recording.basis import (LinearEncoder, encoder_from_state, split_unit_id,
                                         unit_id)
from neuronatlas.run import load_encoder_file, save_encoder_file
from tests.recording.test_recorder import vit_target

LAYER, OTHER = "blocks.1.mlp.fc1", "blocks.0.mlp.fc1"
F = 12


def random_encoder(seed=0, name="rand", activation="none", d_in=768):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((F, d_in)).astype(np.float32) / np.sqrt(d_in)
    b = rng.standard_normal(F).astype(np.float32) * 0.1
    return LinearEncoder(w, b, name=name, activation=activation)


def raw_output(target, folder):
    probe = na.open_probe(str(folder))
    pixels = torch.stack([target.preprocess(probe.read_image(i)) for i in range(len(probe))])
    captured = {}
    module = dict(target.model.named_modules())[LAYER]
    h = module.register_forward_hook(lambda m, i, o: captured.update(o=o))
    with torch.no_grad():
        target.model(pixels)
    h.remove()
    return captured["o"].double().numpy()  # (B, T, D): CLS at 0, registers 1-2, 16 patches


def brute_features(raw, enc: LinearEncoder, mode):
    w, b = enc.weight.double().numpy(), enc.bias.double().numpy()
    feats = np.einsum("btd,fd->btf", raw, w) + b  # the encoder at every token
    if enc.activation == "relu":
        feats = np.maximum(feats, 0)
    return {"patch_mean": lambda x: x[:, 3:].mean(1), "max": lambda x: x.max(1),
            "cls": lambda x: x[:, 0], "mean": lambda x: x.mean(1)}[mode](feats)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from tests.conftest import make_images

    d = tmp_path_factory.mktemp("imgs")
    make_images(d, 30)
    return d


@pytest.mark.parametrize("mode,activation", [("patch_mean", "none"), ("max", "relu")])
def test_basis_recording_equals_the_encoder_applied_by_brute_force(tmp_path, folder, mode,
                                                                    activation):
    target, enc = vit_target(), random_encoder(activation=activation)
    run = na.record(target, str(folder), tmp_path / "run", layers=f"{OTHER},{LAYER}", pooling=mode,
                    save_acts=True, batch_size=7, num_workers=0, k=5, basis={LAYER: enc})
    want = brute_features(raw_output(target, folder), enc, mode)  # (30, F)
    acts = run.acts(LAYER)
    assert acts.shape == (30, F) and run.layers[LAYER]["n_units"] == F
    np.testing.assert_allclose(acts, want, rtol=1e-4, atol=1e-5)
    top = np.asarray(run.array(LAYER, "top_index"))
    assert (top == np.argsort(-want, axis=0, kind="stable")[:5].T).all()
    units = run.units.set_index("unit")
    ids = [f"{LAYER}:{i}@rand" for i in range(F)]
    np.testing.assert_allclose(units.loc[ids, "mean"], want.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(units.loc[ids, "max"], want.max(0), rtol=1e-5, atol=1e-6)
    # identity layers of the same run keep their plain ids and values
    assert f"{OTHER}:0" in units.index and run.layers[OTHER]["n_units"] == 768
    assert run.meta["layers"][1]["basis"]["name"] == "rand"
    assert set(run.meta["key"]["basis"]) == {LAYER}


def test_with_mean_pooling_it_is_the_encoder_applied_to_the_recorded_matrix(tmp_path, folder):
    """A linear map commutes with the mean: recording in the basis == recording the neurons, then
    multiplying the pooled matrix by the encoder."""
    enc = random_encoder(seed=3)
    plain = na.record(vit_target(), str(folder), tmp_path / "plain", layers=LAYER, pooling="mean",
                      save_acts=True, num_workers=0)
    feats = na.record(vit_target(), str(folder), tmp_path / "feats", layers=LAYER, pooling="mean",
                      save_acts=True, num_workers=0, basis={LAYER: enc})
    brute = np.asarray(plain.acts(LAYER), np.float64) @ enc.weight.double().numpy().T + \
        enc.bias.double().numpy()
    np.testing.assert_allclose(feats.acts(LAYER), brute, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def basis_run(tmp_path_factory, folder):
    out = tmp_path_factory.mktemp("basis") / "run"
    return na.record(vit_target(), str(folder), out, layers=LAYER, pooling="patch_mean",
                     save_acts=True, num_workers=0, k=6, basis={LAYER: random_encoder()})


def test_unit_ids_parse_and_round_trip(basis_run):
    for u in basis_run.units["unit"]:
        layer, index = basis_run.parse_unit(u)
        assert basis_run.unit_id(layer, index) == u == unit_id(layer, index, "rand")
        assert split_unit_id(u) == (LAYER, str(index), "rand")
    assert basis_run.unit_ids(LAYER)[3] == f"{LAYER}:3@rand"
    assert split_unit_id("a.b:7") == ("a.b", "7", None)
    with pytest.raises(UserError, match=f"{LAYER}:3@rand"):
        basis_run.parse_unit(f"{LAYER}:3")  # a feature needs its basis in the id
    with pytest.raises(UserError, match="basis 'rand'"):
        basis_run.parse_unit(f"{LAYER}:3@sae")
    with pytest.raises(UserError, match="out of range"):
        basis_run.parse_unit(f"{LAYER}:{F}@rand")


def test_exemplars_replay_the_basis(basis_run):
    from neuronatlas.atlas.exemplars import exemplars

    for unit in (f"{LAYER}:0@rand", f"{LAYER}:7@rand"):
        tiles = exemplars(basis_run, unit, "top", k=3, target=vit_target())
        _, u = basis_run.parse_unit(unit)
        assert [t.index for t in tiles] == list(np.asarray(basis_run.array(LAYER, "top_index"))[u, :3])
        for t in tiles:  # the re-run applies the stored encoder: the recorded feature comes back
            assert t.recomputed == pytest.approx(t.value, rel=1e-4, abs=1e-5)
            assert t.heatmap is not None and t.heatmap.shape == (32, 32)


def test_atlas_tiles_of_features_equal_their_exemplars(basis_run):
    """The atlas's batched renderer (one pass per layer) replays the basis too."""
    from neuronatlas.atlas.tiles import TileRenderer

    target = vit_target()
    r = TileRenderer(basis_run, target=target)
    units = [f"{LAYER}:1@rand", f"{LAYER}:9@rand"]
    assert r.ensure(units) == units
    for unit in units:
        meta = r.meta(unit)
        assert meta["has_heat"] and meta["max_abs_diff"] < 1e-4  # recomputed == recorded features


def test_describe_and_evaluate_work_on_features(basis_run):
    from neuronatlas.describe import describe
    from neuronatlas.evaluate import evaluate
    from tests.evaluate.conftest import ColorScorer

    labels = describe(basis_run, "clip-dissect", scorer=ColorScorer(),
                      concepts=["red", "green", "blue"], show_progress=False)
    assert set(labels["unit"]) == set(basis_run.unit_ids(LAYER))
    from neuronatlas.run import read_evaluation

    evaluate(basis_run, methods=["clip-dissect"], embedder=None, scorer=ColorScorer(), simulation=True)
    sim = read_evaluation(basis_run.path, "simulation")
    assert set(sim["unit"]) == set(basis_run.unit_ids(LAYER)) and sim["unit"].str.endswith("@rand").all()


def test_another_encoder_is_another_run_and_a_resume_reads_the_stored_one(tmp_path, folder):
    out = tmp_path / "run"
    enc = random_encoder()
    first = na.record(vit_target(), str(folder), out, layers=LAYER, num_workers=0, basis={LAYER: enc})
    with pytest.raises(UserError, match="basis"):
        na.record(vit_target(), str(folder), out, layers=LAYER, num_workers=0,
                  basis={LAYER: random_encoder(seed=1)})
    again = na.record(vit_target(), str(folder), out, layers=LAYER, num_workers=0)  # basis from RUN
    assert again.meta["key"] == first.meta["key"]
    with pytest.raises(UserError, match="not among the recorded layers"):
        na.record(vit_target(), str(folder), tmp_path / "x", layers=LAYER, num_workers=0,
                  basis={"blocks.9.mlp.fc1": enc})
    with pytest.raises(UserError, match="reads 768 units but blocks.1.attn.qkv has 576"):
        na.record(vit_target(), str(folder), tmp_path / "y", layers="blocks.1.attn.qkv",
                  num_workers=0, basis={"blocks.1.attn.qkv": enc})


def test_encoder_files_round_trip_and_bad_encoders_are_one_line(tmp_path):
    enc = random_encoder(activation="relu")
    save_encoder_file(tmp_path / "e.npz", enc.to_json(), enc.state())
    config, state = load_encoder_file(tmp_path / "e.npz")
    back = encoder_from_state(config, state)
    x = torch.randn(5, 4, 768)
    assert torch.equal(back.encode(x), enc.encode(x)) and back.to_json() == enc.to_json()
    with pytest.raises(UserError, match="not usable in unit ids"):
        LinearEncoder(np.zeros((2, 3)), name="a:b")
    with pytest.raises(UserError, match="kind 'sae-x'"):
        encoder_from_state({"kind": "sae-x", "name": "s"}, {})
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(UserError, match="not an encoder file"):
        load_encoder_file(tmp_path / "bad.npz")


def test_cli_records_a_basis_from_an_encoder_file(tmp_path):
    from typer.testing import CliRunner

    from neuronatlas.cli import app
    from tests.conftest import make_images

    make_images(tmp_path / "imgs", 10)
    enc = random_encoder(seed=5, name="lin")
    save_encoder_file(tmp_path / "enc.npz", enc.to_json(), enc.state())
    args = ["record", "timm:vit_tiny_patch16_224", "--random-weights", "--layers", LAYER, "--data",
            str(tmp_path / "imgs"), "--save-acts", "--workers", "0", "-q"]
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "cli"), "--basis",
                                        f"{LAYER}={tmp_path / 'enc.npz'}"])
    assert r.exit_code == 0, r.output
    assert f"10 images x {F} units" in r.output
    api = na.record("timm:vit_tiny_patch16_224", str(tmp_path / "imgs"), tmp_path / "api",
                    layers=LAYER, save_acts=True, num_workers=0, random_weights=True,
                    basis={LAYER: enc})
    cli = na.open_run(tmp_path / "cli")
    assert np.asarray(cli.acts(LAYER)).tobytes() == np.asarray(api.acts(LAYER)).tobytes()
    assert list(cli.units["unit"]) == [f"{LAYER}:{i}@lin" for i in range(F)]
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "bad"), "--basis", "nonsense"])
    assert r.exit_code != 0 and "LAYER=FILE.npz" in str(r.exception) + r.output
