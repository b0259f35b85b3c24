"""`netspec import MODEL`: a Caffe, darknet or ONNX network (and its weights) as a netspec spec
and run."""
from __future__ import annotations

from pathlib import Path

import click

from .options import out_dir_option, output_option


def write_imported_run(run_dir: Path, imported) -> None:
    """A run directory as `netspec train` leaves one at step 0 (checkpoint.safetensors with
    the state, state.json), holding the imported weights, so that eval, predict, export and
    train --init-from take it as they take a run."""
    from ..errors import RunError
    from ..train.checkpoint import save_checkpoint
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} is not empty; give another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"can't create {run_dir}: {e.strerror or e}") from None
    save_checkpoint(run_dir, imported.parameters(), {}, imported.run_state())


def _input_size(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"'{text}' is not CxHxW (three positive integers, e.g. "
                                 f"3x32x32)", param_hint="--input")
    return tuple(int(p) for p in parts)


@click.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), metavar="FILE",
              help="The trained weights (.caffemodel, darknet .weights; an .onnx file holds its "
                   "own); written as a run's checkpoint to --out.")
@click.option("--mean", type=click.Path(dir_okay=False), metavar="FILE",
              help="Caffe's mean image (.binaryproto), subtracted by predict and eval.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Class names, one per line in output order ('ID NAME' lines, as Caffe's "
                   "synset_words.txt, give ids and names).")
@click.option("--params", type=click.Path(dir_okay=False), metavar="FILE",
              help="cuda-convnet's layer-params.cfg (epsW, momW, wc: the recipe).")
@click.option("--input", "input_size", metavar="CxHxW",
              help="The image size, for cuda-convnet's layers.cfg (its data provider has "
                   "it, not the file), e.g. 3x32x32.")
@output_option("Where to write the spec (default: print it).", metavar="FILE.net")
@out_dir_option("The run directory to write (the checkpoint and its state); needed with "
                "--weights.")
def import_cmd(model, weights, mean, classes_file, params, input_size, output, out):
    """Read MODEL (a Caffe deploy .prototxt, a darknet .cfg, an .onnx file, or a cuda-convnet
    layers.cfg with --params and --input) as a netspec spec; with --weights (an .onnx file
    brings its own) and --out, also a run directory that eval, predict, export and train
    --init-from take. Everything netspec can't express is reported at once (exit 2) and
    nothing is written."""
    from ..importers import import_model
    from ..importers.model import read_class_list
    from ..train.checkpoint import atomic_write

    if weights and not out:
        raise click.UsageError("--weights needs --out DIR: the run directory the checkpoint "
                               "goes to")
    imported = import_model(model, weights=weights, mean=mean, params=params,
                            input_shape=_input_size(input_size))
    if classes_file:
        imported.classes, imported.class_names = read_class_list(classes_file,
                                                                 imported.class_count)
    text = imported.spec_text()
    from ..ir.build import build_graph
    build_graph(text=text)            # the spec written is one netspec compiles
    if out:
        write_imported_run(Path(out), imported)
    if output:
        atomic_write(Path(output), text.encode())
    if not output and not out:
        click.echo(text, nl=False)
        return
    what = [f"spec {output}"] if output else []
    if out:
        what.append(f"run {out} ({'weights' if imported.has_weights else 'no weights'})")
    click.echo(f"imported {imported.network} from {imported.format}: {len(imported.layers)} "
               f"layers, input {'x'.join(map(str, imported.input_shape))} "
               f"({imported.channel_order}); wrote {', '.join(what)}")
