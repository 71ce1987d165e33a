"""The `lens decompose|segment|adversarial|discover` commands on a tiny world-clip run."""

import json

from typer.testing import CliRunner

from lens_apps_fixtures import world_clip_lens_run  # noqa: F401


def app():
    from neuronatlas.cli import app as main_app  # `neuronatlas lens ...` as a user runs it

    return main_app


def test_commands_run_and_write(world_clip_lens_run):
    out, _ = world_clip_lens_run
    runner = CliRunner()
    r = runner.invoke(app(), ["lens", "decompose", str(out), "--terms", "6", "--show", "2"])
    assert r.exit_code == 0, r.output
    assert "mean reconstruction cosine" in r.output and (out / "labels" / "second-order.parquet").exists()
    r = runner.invoke(app(), ["lens", "segment", str(out), "--data", "world:n=6,size=32,seed=9,objects=1",
                              "--neurons", "30"])
    assert r.exit_code == 0, r.output
    seg = json.loads((out / "lens" / "apps" / "segmentation.json").read_text())
    assert seg["n_images"] == 6 and f"{seg['aligned']['miou']:8.4f}" in r.output
    r = runner.invoke(app(), ["lens", "adversarial", str(out), "--source", "red", "--target", "blue",
                              "--prompts", "2", "--images", "2", "--backend", "world:32"])
    assert r.exit_code == 0, r.output
    assert "guiding words:" in r.output and "random" in r.output
    r = runner.invoke(app(), ["lens", "discover", str(out), "--image", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["image"] == 1


def test_help_names_every_command():
    r = CliRunner().invoke(app(), ["lens", "--help"])
    for name in ("decompose", "segment", "adversarial", "discover"):
        assert name in r.output
