"""The `netspec export` and `netspec predict` commands: flags in, the library called (the cli
layer, though it sits in train's folder, like evaluate_cli)."""
from __future__ import annotations

from pathlib import Path

import click

from ..cli_types import BACKENDS, BATCH_SIZE


@click.command("export")
@click.argument("spec", type=click.Path())
@click.option("--checkpoint", type=click.Path(),
              help="A run directory or .safetensors file whose weights to export (default: "
                   "the spec's initial weights for --seed).")
@click.option("--seed", type=click.IntRange(min=0),
              help="Seed of the initial weights when there is no --checkpoint [default: 0].")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE.onnx",
              help="Where to write (default: <network>.onnx in the current directory).")
def export(spec, checkpoint, seed, output):
    """Write SPEC's network at test time as an ONNX model (opset 17, softmax output)."""
    from .export import export_network

    if checkpoint and seed is not None:
        raise click.UsageError("--seed picks initial weights; a --checkpoint brings its own")
    if output is None:
        from ..ir.build import build_graph
        output = str(Path.cwd() / f"{build_graph(spec).name}.onnx")
    res = export_network(spec, output, checkpoint=checkpoint, seed=seed or 0)
    click.echo(f"wrote {res['path']}: {res['network']}, {res['params']:,} parameters "
               f"({res['weights']}), {res['bytes'] / 1e6:.1f} MB, input 'data', output "
               f"softmax probabilities over {res['classes']} classes")


@click.command("predict")
@click.option("--checkpoint", required=True, type=click.Path(),
              help="A run directory or its checkpoint.safetensors (the spec, classes and "
                   "mean image come with it).")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--ten-crop", is_flag=True,
              help="Average the softmax over the paper's 10 views (§4.1) instead of the "
                   "centre crop.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classes to list per image.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image, one a line.")
@click.option("--backend", default="numpy", show_default=True, type=BACKENDS)
@click.option("-b", "--batch-size", type=BATCH_SIZE, default=16, show_default=True,
              help="Images per forward pass.")
def predict(checkpoint, images, ten_crop, top, as_json, backend, batch_size):
    """Top classes of a trained network for each IMAGE, with the run's preprocessing.

    A file that can't be read is reported (with the reason the data pipeline gives) and
    skipped; the exit status is 2 only when no image could be read."""
    import json

    from ..errors import NetspecError
    from .predict import Predictor, predict_files

    predictor = Predictor.from_run(checkpoint, backend)
    skipped = answered = 0
    for res in predict_files(predictor, images, ten_crop=ten_crop, top=top,
                             batch_size=batch_size):
        if "error" in res:
            skipped += 1
            if as_json:
                click.echo(json.dumps(res))
            click.echo(f"netspec: skipped {res['image']} ({res['error']})", err=True)
            continue
        answered += 1
        if as_json:
            click.echo(json.dumps(res))
            continue
        click.echo(f"{res['image']} ({'10 views' if ten_crop else 'centre crop'}):")
        width = max(len(t["name"]) for t in res["top"])
        for t in res["top"]:
            click.echo(f"  {t['rank']:>2}. {t['name']:<{width}}  {100 * t['probability']:6.2f}%"
                       + (f"  {t['class']}" if t["class"] != t["name"] else ""))
    if skipped:
        click.echo(f"netspec: skipped {skipped} unreadable image file(s) of {len(images)}",
                   err=True)
    if not answered:
        raise NetspecError("no image could be read")
