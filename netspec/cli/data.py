"""`netspec prepare`: build a prepared cache (netspec/data/prepare.py). A DataError goes up to
the group, which prints its one line and exits with status 2."""
from __future__ import annotations

import click

from .options import out_dir_option, workers_option


@click.command("prepare")
@click.option("--data", "data_dir", required=True, metavar="DIR|demo",
              help="Image folder (DIR/train/<class>/*.jpg, DIR/val/<class>/*.jpg; ImageNet's "
                   "official or Kaggle CLS-LOC layout) or 'demo'.")
@out_dir_option("Folder to write the cache to.", required=True)
@workers_option("Decoding processes (0: none; default: one per CPU core).", default=None)
@click.option("--base", default=None, type=click.IntRange(min=1), metavar="N",
              help="Side of the rescaled, centre-cropped images (§2). Default: 256; 72 for demo.")
def prepare(data_dir: str, out: str, workers: int | None, base: int | None) -> None:
    """Decode every image once into a memory-mappable cache; --data CACHE then reads it.

    The cache records the layout and where the val labels came from (devkit, Kaggle's
    LOC_val_solution.csv, or class folders).

    Rerun the same command to resume after an interruption.
    """
    from ..data.prepare import prepare_dataset

    dataset = prepare_dataset(data_dir, out, base=base, workers=workers, progress=True)
    counts = ", ".join(f"{split} {dataset.size(split)}" for split in dataset.splits)
    skipped = f", {len(dataset.skipped)} skipped" if dataset.skipped else ""
    if dataset.tree_skipped:
        skipped += f", {len(dataset.tree_skipped)} directory entries skipped (see above)"
    click.echo(f"prepared {dataset.root}: {len(dataset.classes)} classes, {counts} images "
               f"({dataset.base}×{dataset.base}){skipped}")
