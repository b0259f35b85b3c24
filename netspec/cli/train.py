"""`netspec train`: train a network as its spec's recipe says, or continue a run (--resume)."""
from __future__ import annotations

import sys

import click

from ..dsl.attrs import FLOAT_MAX
from .options import (
    FiniteFloatRange,
    backend_option,
    batch_size_option,
    devices_option,
    out_dir_option,
    seed_option,
    workers_option,
)


@click.command("train")
@click.option("--spec", type=click.Path(), metavar="SPEC",
              help="The network and its recipe (required unless --resume).")
@click.option("--data", metavar="DIR|CACHE|demo",
              help="Image folder DIR (class folders, ImageNet's official or Kaggle layout), a "
                   "prepared cache, or 'demo' (generated on first use); required unless "
                   "--resume.")
@backend_option("Backend that trains the network")
@devices_option
@click.option("--epochs", type=click.IntRange(min=1), help="Override the spec's epochs.")
@batch_size_option("Override the spec's batch.")
@click.option("--lr", type=FiniteFloatRange(min=0, max=FLOAT_MAX, min_open=True),
              help="Override the spec's learning rate.")
@click.option("--max-steps", type=click.IntRange(min=0),
              help="Stop after N optimizer steps in total (resumed steps count).")
@seed_option("Seed of every random draw: initial weights, data order, augmentation and "
             "dropout.")
@workers_option("Data transform processes (0: in the training process).")
@out_dir_option("Run directory (default runs/<network>-<timestamp>).")
@click.option("--resume", type=click.Path(file_okay=False), metavar="RUN",
              help="Continue the run in this directory exactly; spec, data and recipe come "
                   "from the run.")
@click.option("--init-from", type=click.Path(), metavar="RUN",
              help="Fine-tune: start a new run from RUN's weights where names and shapes "
                   "match (the spec's init elsewhere; momentum 0, step 0).")
@click.option("--print-freq", type=click.IntRange(min=1), default=10, show_default=True,
              help="Off a terminal (a log file, CI): a progress line every N batches.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-figures", is_flag=True,
              help="Don't write curves.png and filters.png into the run at each evaluation.")
@click.option("--checkpoint-every", type=click.IntRange(min=1),
              help="Also checkpoint every N steps, mid-epoch (default: the spec's "
                   "'checkpoint every N', else at epoch ends only).")
@click.option("--keep", type=click.IntRange(min=1),
              help="Checkpoints to keep, the newest included (default: the spec's, else 1).")
@click.option("--allow-data-change", is_flag=True,
              help="With --resume: go on although the data changed since the run started "
                   "(the change is recorded in the run's state).")
def train_cmd(spec, data, backend, devices, epochs, batch_size, lr, max_steps, seed, workers,
              out, resume, init_from, print_freq, no_progress, no_figures, checkpoint_every,
              keep, allow_data_change):
    """Train a network as its spec's recipe says (§4-5 of the paper for AlexNet)."""
    from ..train.loop import TrainOptions, train

    if resume and (spec or data or epochs or batch_size or out):
        raise click.UsageError("--resume takes the spec, data and recipe from the run; give "
                               "only --max-steps, --lr, --checkpoint-every, --keep, "
                               "--allow-data-change (and --backend, --devices, -j) with it")
    if resume and init_from:
        raise click.UsageError("--init-from starts a new run from another run's weights; "
                               "--resume continues a run: give one of them")
    if allow_data_change and not resume:
        raise click.UsageError("--allow-data-change goes with --resume")
    if not resume and not (spec and data):
        raise click.UsageError("give --spec SPEC and --data DIR|CACHE|demo, or --resume RUN")
    opts = TrainOptions(spec=spec, data=data, backend=backend, devices=devices, epochs=epochs,
                        batch_size=batch_size, lr=lr, max_steps=max_steps, seed=seed,
                        workers=workers, out=out, resume=resume, init_from=init_from,
                        print_freq=print_freq, progress=not no_progress, figures=not no_figures,
                        checkpoint_every=checkpoint_every, keep=keep,
                        allow_data_change=allow_data_change)
    result = train(opts, echo=click.echo)
    if result.get("stopped"):
        sys.exit(130)
