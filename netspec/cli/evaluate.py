"""`netspec eval` and `netspec predict`: a trained network scored on validation images, or
its top classes for image files."""
from __future__ import annotations

import json

import click

from .options import (
    backend_option,
    batch_size_option,
    devices_option,
    json_option,
    workers_option,
)


@click.command("eval")
@click.option("--spec", type=click.Path(), metavar="SPEC",
              help="The network (default: the run's own spec).")
@click.option("--checkpoint", required=True, multiple=True, type=click.Path(), metavar="RUN",
              help="A run directory, a .safetensors file or RUN/checkpoint-best (the run's "
                   "best epoch); several: their ensemble (§6).")
@click.option("--data", metavar="DIR|CACHE|demo",
              help="Image folder, prepared cache or 'demo' (default: the run's).")
@click.option("--ten-crop", is_flag=True, help="Average the softmax over 10 crops (§4.1).")
@backend_option("Backend that runs the network")
@devices_option
@batch_size_option("Images per batch (default: the spec's batch).")
@workers_option("Data transform processes (0: in this process).")
@json_option("Print the figures as one JSON object.")
def eval_cmd(spec, checkpoint, data, ten_crop, backend, devices, batch_size, workers, as_json):
    """Top-1 and top-5 error of a trained network on the validation images; with several
    --checkpoint, each one's and their averaged softmax's (the paper's ensembles, §6)."""
    if len(checkpoint) > 1:
        from ..train.ensemble import format_ensemble, run_ensemble
        result = run_ensemble(checkpoints=checkpoint, spec=spec, data=data, ten_crop=ten_crop,
                              backend=backend, devices=devices, batch_size=batch_size,
                              workers=workers)
        click.echo(json.dumps(result) if as_json else format_ensemble(result))
        return
    from ..train.evaluate_run import run_eval

    result = run_eval(spec=spec, checkpoint=checkpoint[0], data=data, ten_crop=ten_crop,
                      backend=backend, devices=devices, batch_size=batch_size,
                      workers=workers)
    if as_json:
        click.echo(json.dumps(result))
        return
    top5 = (f", top-5 error {100 * result['top5_error']:.2f}%"
            if len(result["per_class"]) > 5 else "")   # 5 classes or fewer: always right
    click.echo(f"{result['network']}: {result['images']} val images, "
               f"{'10-crop' if ten_crop else 'centre crop'}: top-1 error "
               f"{100 * result['top1_error']:.2f}%{top5}")
    hardest = describe_hardest(result)
    if hardest:
        click.echo(hardest)


def describe_hardest(result: dict, count: int = 5) -> str:
    """One line: the classes with the highest top-1 error, by their human names."""
    scored = [c for c in result.get("per_class", []) if c["images"]]
    worst = sorted(scored, key=lambda c: (-c["top1_error"], c["class"]))[:count]
    if not worst:
        return ""
    return "hardest classes (top-1 error): " + ", ".join(
        f"{c['name']} {100 * c['top1_error']:.0f}%" for c in worst)


@click.command("predict")
@click.option("--checkpoint", required=True, type=click.Path(), metavar="RUN",
              help="A run directory, its checkpoint.safetensors or RUN/checkpoint-best (the "
                   "spec, classes and mean image come with it), or a MODEL.onnx written by "
                   "netspec export (run by onnxruntime; its metadata gives the mean image, "
                   "crop and classes).")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--ten-crop", is_flag=True,
              help="Average the softmax over the paper's 10 views (§4.1) instead of the "
                   "centre crop.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classes to list per image.")
@json_option("One JSON object per image, one a line.")
@backend_option("Backend that runs the network", numerics=True)
@batch_size_option("Images per forward pass.", default=16, show_default=True)
def predict(checkpoint, images, ten_crop, top, as_json, backend, batch_size):
    """Top classes of a trained network for each IMAGE, with the run's preprocessing.

    A file that can't be read is reported (with the reason the data pipeline gives) and
    skipped; the exit status is 2 only when no image could be read."""
    from ..errors import NetspecError
    from ..train.predict import load_predictor, predict_files

    predictor = load_predictor(checkpoint, backend)
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
