"""`netspec viz`: the architecture diagram of a spec, or a figure from a training run.

    netspec viz SPEC -o arch.svg                       the Figure 2 style diagram
    netspec viz --run runs/NAME -o conv1.png --filters conv1
    netspec viz --run runs/NAME -o curves.png --curves
    netspec viz --run runs/NAME -o pred.png --predictions [--data DIR]
    netspec viz --run runs/NAME -o nn.png --neighbours [--data DIR]
"""
from __future__ import annotations

from pathlib import Path

import click

from .options import backend_option, output_option


def _output(ctx, param, value):
    from ..viz.errors import VizError
    from ..viz.render import FORMATS, check_suffix

    if value is None:
        return None
    try:
        check_suffix(value)
    except VizError:
        raise click.BadParameter(f"'{value}' must end in {' or '.join(FORMATS)}") from None
    return value


@click.command("viz")
@click.argument("spec", required=False, type=click.Path())
@output_option("Where to draw: FILE.svg or FILE.png (default for a SPEC's diagram: "
               "<network>.svg in the current directory).", callback=_output)
@click.option("--width", type=click.IntRange(min=100), metavar="N",
              help="Image width in pixels (default: the figure's own, ≥1200 for the diagram).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), metavar="runs/NAME",
              help="A training run to draw a figure from (needs one of the flags below).")
@click.option("--filters", "filters", metavar="LAYER",
              help="The kernels of a conv layer, split by GPU (Figure 3).")
@click.option("--curves", is_flag=True,
              help="Training and validation error, loss and learning rate against epochs.")
@click.option("--predictions", is_flag=True,
              help="Validation images with their top-5 labels (Figure 4, left).")
@click.option("--neighbours", "--neighbors", "neighbours", is_flag=True,
              help="Validation images and their nearest training images in the last hidden "
                   "layer's features (Figure 4, right).")
@click.option("--data", metavar="DIR",
              help="Data set for --predictions/--neighbours (default: the run's own).")
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="Validation images to show (default 8 for --predictions, 5 for "
                   "--neighbours).")
@click.option("-k", "k", type=click.IntRange(min=1), default=6, show_default=True, metavar="K",
              help="Neighbours per image.")
@click.option("--search", type=click.IntRange(min=0), default=10000, show_default=True,
              metavar="N", help="Training images searched for neighbours, spread over the set "
                                "(0: all).")
@backend_option("Backend that runs the network for --predictions/--neighbours",
                numerics=True)
def viz(spec, output, width, run_dir, filters, curves, predictions, neighbours, data, count, k,
        search, backend):
    """Draw SPEC's architecture, one lane per GPU (Figure 2), or a figure from a run."""
    from ..ir.build import build_graph

    _check_figure_flags(spec, output, run_dir, data, {
        "--filters": filters is not None, "--curves": curves, "--predictions": predictions,
        "--neighbours": neighbours})
    graph = build_graph(path=spec) if spec else None
    run = None
    if run_dir:
        from ..viz.run import open_run

        run = open_run(run_dir)
        if graph is not None and graph.name != run.graph.name:
            from ..viz.errors import VizError
            raise VizError(f"{spec} describes network '{graph.name}', but {run_dir} trained "
                           f"'{run.graph.name}'")
        graph = run.graph
    label = f"{graph.name} · {Path(run_dir).name}" if run_dir else graph.name
    if output is None:              # the diagram, as a user's first command: <network>.svg here
        output = str(Path.cwd() / f"{graph.name}.svg")

    if filters is not None:
        from ..viz.filters import draw_filters
        from ..viz.run import layer_kernels

        weights, parts = layer_kernels(graph, run.parameters(), filters)
        draw_filters(weights, output, parts, title=f"{label} · {filters} kernels", width=width)
    elif curves:
        from ..viz.curves import draw_curves

        draw_curves(run.metrics(), output, title=f"{label} · learning curves", width=width)
    elif predictions:
        from ..train.saved_net import run_predictions
        from ..viz.predictions import draw_predictions

        images, probs, labels, names = run_predictions(run, data, count or 8, backend)
        draw_predictions(images, probs, labels, names, output,
                         title=f"{label} · top-5 predictions on validation images", width=width)
    elif neighbours:
        from ..train.saved_net import run_neighbours
        from ..viz.neighbours import draw_neighbours

        q, found, dist, q_names, n_names, searched = run_neighbours(run, data, count or 5, k,
                                                                    search, backend)
        draw_neighbours(q, found, output, dist, q_names, n_names,
                        title=f"{label} · nearest of {searched:,} training images", width=width)
    else:
        from ..viz.diagram import render_diagram

        render_diagram(graph, output, width)
    click.echo(f"wrote {output}")


def _check_figure_flags(spec, output, run_dir, data, chosen: dict[str, bool]) -> None:
    """Usage errors before anything is read: one figure at most, from a run, to a file."""
    figures = [name for name, on in chosen.items() if on]
    if len(figures) > 1:
        raise click.UsageError(f"choose one figure, not {' and '.join(figures)}")
    if figures and not run_dir:
        raise click.UsageError(f"{figures[0]} draws from a training run; give --run runs/NAME")
    if figures and output is None:
        raise click.UsageError(f"{figures[0]} needs -o FILE.svg or FILE.png")
    if data and not (chosen["--predictions"] or chosen["--neighbours"]):
        raise click.UsageError("--data is for --predictions and --neighbours")
    if not spec and not run_dir:
        raise click.UsageError("give a SPEC file to draw, or --run runs/NAME")
