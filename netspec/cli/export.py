"""`netspec export SPEC`: the network at test time as an ONNX model."""
from __future__ import annotations

from pathlib import Path

import click

from .options import output_option, seed_option


@click.command("export")
@click.argument("spec", type=click.Path())
@click.option("--checkpoint", type=click.Path(), metavar="RUN",
              help="A run directory or .safetensors file whose weights to export (default: "
                   "the spec's initial weights for --seed).")
@seed_option("Seed of the initial weights when there is no --checkpoint [default: 0].",
             default=None)
@output_option("Where to write (default: <network>.onnx in the current directory).",
               metavar="FILE.onnx")
def export(spec, checkpoint, seed, output):
    """Write SPEC's network at test time as an ONNX model (opset 17, softmax output)."""
    from ..train.export import export_network

    if checkpoint and seed is not None:
        raise click.UsageError("--seed picks initial weights; a --checkpoint brings its own")
    if output is None:
        from ..ir.build import build_graph
        output = str(Path.cwd() / f"{build_graph(spec).name}.onnx")
    res = export_network(spec, output, checkpoint=checkpoint, seed=seed or 0)
    click.echo(f"wrote {res['path']}: {res['network']}, {res['params']:,} parameters "
               f"({res['weights']}), {res['bytes'] / 1e6:.1f} MB, input 'data', output "
               f"softmax probabilities over {res['classes']} classes")
