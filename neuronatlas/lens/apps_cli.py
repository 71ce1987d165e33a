"""`neuronatlas lens decompose|segment|adversarial|discover`: what the second-order effects buy.

Each command reads the second-order effects that `neuronatlas lens second-order ... --out RUN` stored
in RUN, and reloads the same CLIP (spec, weights, seed) to embed texts. `register(lens_app)` adds
the commands to the `lens` group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

RUN_HELP = "Directory holding the second-order effects (the --out of `neuronatlas lens second-order`)."
LAYERS_HELP = "Comma-separated layers with second-order effects (default: every one in RUN)."


def _layers(layers: Optional[str]):
    return [s.strip() for s in layers.split(",") if s.strip()] if layers else None


def decompose(
    run: Path = typer.Argument(..., help=RUN_HELP),
    concepts: Optional[str] = typer.Option(None, help="Text set: words20k (default; world-clip: "
                                                       "world), words10k, imagenet, world, or a "
                                                       "text file with one text per line."),
    solver: str = typer.Option("omp", help="omp (orthogonal matching pursuit) or lasso "
                                           "(non-negative lasso)."),
    terms: int = typer.Option(32, help="Terms per neuron (OMP's number of atoms)."),
    alpha: float = typer.Option(1e-3, help="Lasso penalty (with --solver lasso)."),
    center: bool = typer.Option(True, help="Subtract the mean text embedding before normalising "
                                           "each atom to unit norm."),
    layers: Optional[str] = typer.Option(None, help=LAYERS_HELP),
    show: int = typer.Option(8, help="Neurons to print."),
):
    """Decompose every neuron's second-order PC into texts; store them as `second-order` labels."""
    from ..describe import describe
    from ..run import labels_path, read_label_config

    df = describe(run, "second-order", layers=_layers(layers), concepts=concepts, solver=solver,
                  top=terms, alpha=alpha, center=center)
    config = read_label_config(run, "second-order")
    for unit, g in list(df.groupby("unit", sort=False))[:show]:
        words = ", ".join(f"{t} {c:+.2f}" for t, c in zip(g["label"][:6], g["score"][:6]))
        typer.echo(f"{unit:40s} cos {g['cosine'].iloc[0]:.3f}  {words}")
    per = df.groupby("unit")[["cosine", "relative_residual"]].first()
    typer.echo(f"decomposed {len(per)} neurons over {config['n_atoms']} texts ({solver}, {terms} "
               f"terms): mean reconstruction cosine {per['cosine'].mean():.3f}, mean relative "
               f"residual {per['relative_residual'].mean():.3f}; labels in {labels_path(run, 'second-order')}")


def segment(
    run: Path = typer.Argument(..., help=RUN_HELP),
    data: str = typer.Option("world:n=200,size=64,seed=7,objects=1",
                             help="Images with foreground masks: a world: spec, or "
                                  "imagenet-seg:PATH/gtsegs_ijcv.mat."),
    classes: str = typer.Option("world-colors", help="Zero-shot classes: world-colors, world-shapes, "
                                                     "imagenet, a,b,c, or a file."),
    neurons: int = typer.Option(200, help="Neurons most aligned with the predicted class (and as "
                                          "many random ones for the baseline)."),
    alignment: str = typer.Option("signed", help="Rank neurons by pc . class (signed: those that "
                                                 "push towards the class) or |pc . class| "
                                                 "(absolute, the reference's)."),
    threshold: float = typer.Option(0.5, help="Mask threshold on the min-max-normalised heatmap."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N images."),
    batch_size: int = typer.Option(32),
    seed: int = typer.Option(0, help="Seed of the random-neuron baseline."),
    layers: Optional[str] = typer.Option(None, help=LAYERS_HELP),
):
    """Zero-shot segmentation from the neurons aligned with the predicted class, vs random neurons:
    pixel accuracy, mIoU, mAP."""
    from ..run import lens_app_path, write_json
    from .segmentation import SegmentConfig
    from .segmentation import segment as do_segment

    cfg = SegmentConfig(n_neurons=neurons, classes=classes, alignment=alignment, threshold=threshold,
                        batch_size=batch_size, seed=seed, limit=limit)
    out = do_segment(run, data, cfg, _layers(layers))
    write_json(lens_app_path(run, "segmentation.json"), out)
    typer.echo(f"{'neurons':10s} {'pixel acc':>10s} {'mIoU':>8s} {'mAP':>8s}   ({out['n_images']} images)")
    for kind in ("aligned", "random", "background"):
        m = out[kind]
        typer.echo(f"{kind:10s} {m['pixel_accuracy']:10.4f} {m['miou']:8.4f} {m['map']:8.4f}")
    typer.echo(f"written to {lens_app_path(run, 'segmentation.json')}")


def adversarial(
    run: Path = typer.Argument(..., help=RUN_HELP),
    source: str = typer.Option(..., help="The class the images show (e.g. red)."),
    target: str = typer.Option(..., help="The class CLIP should wrongly see (e.g. blue)."),
    classes: str = typer.Option("world-colors", help="Zero-shot classes (as for segment)."),
    backend: str = typer.Option("world", help="Text-to-image: world[:SIZE] (offline) or "
                                              "diffusers:MODEL (needs diffusers and the weights)."),
    neurons: int = typer.Option(50, help="Neurons with the largest |pc . (e_target - e_source)|."),
    words: int = typer.Option(20, help="Guiding words kept."),
    prompts: int = typer.Option(8, help="Prompts written."),
    images: int = typer.Option(4, help="Images per prompt."),
    seed: int = typer.Option(0),
    layers: Optional[str] = typer.Option(None, help=LAYERS_HELP),
):
    """Images of SOURCE built from the words of the neurons that push CLIP towards TARGET; success =
    CLIP moves to TARGET. Compared with as many random words."""
    from .adversarial import AdversarialConfig, adversarial_from_run

    cfg = AdversarialConfig(n_neurons=neurons, n_words=words, n_prompts=prompts,
                            images_per_prompt=images, seed=seed)
    res = adversarial_from_run(run, source, target, classes, backend, cfg, _layers(layers))
    typer.echo("guiding words: " + ", ".join(f"{w} ({s:.2f})" for w, s in res.words))
    for p in res.prompts[:3]:
        typer.echo(f"  prompt: {p}")
    typer.echo(f"{'words':10s} {'img.d > 0':>10s} {'classified':>11s} {'kept':>6s}")
    for name, r in (("neurons", res.rates), ("random", res.baseline_rates)):
        typer.echo(f"{name:10s} {r['direction']:10.3f} {r['classified']:11.3f} {r['kept_source']:6.3f}")


def discover(
    run: Path = typer.Argument(..., help=RUN_HELP),
    image: list[int] = typer.Option(..., help="Probe image index (repeat for several)."),
    top: int = typer.Option(10, help="Concepts per image."),
    layers: Optional[str] = typer.Option(None, help=LAYERS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """The concepts of one image: its significant neurons' words, and its embedding's decomposition."""
    from .discovery import discover_from_run

    out = discover_from_run(run, list(image), top, _layers(layers))
    if as_json:
        typer.echo(json.dumps(out, indent=1, default=float))
        return
    for d in out:
        typer.echo(f"image {d['image']} ({d['image_id']}): {d['label']}")
        typer.echo(f"  {d['n_significant']} significant neurons: "
                   + ", ".join(f"{t} {s:.2f}" for t, s in d["neuron_concepts"]))
        typer.echo(f"  embedding (cos {d['embedding_cosine']:.2f}): "
                   + ", ".join(f"{t} {s:+.2f}" for t, s in d["embedding_concepts"]))


COMMANDS = {"decompose": decompose, "segment": segment, "adversarial": adversarial,
            "discover": discover}


def register(lens_app: typer.Typer) -> None:
    """Add the application commands to the `lens` typer group."""
    for name, fn in COMMANDS.items():
        lens_app.command(name)(fn)
