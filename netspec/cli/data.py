"""`netspec prepare`: the click command that builds a prepared cache (see prepare.py).

The CLI registers it with main.add_command(prepare). A DataError goes up to the CLI, which
prints its one line and exits with status 2.
"""
from __future__ import annotations

import click

from netspec.data.prepare import prepare_dataset


@click.command("prepare")
@click.option("--data", "data_dir", required=True, metavar="DIR",
              help="Image folder (DIR/train/<class>/*.jpg, DIR/val/<class>/*.jpg; ImageNet's "
                   "official or Kaggle CLS-LOC layout) or 'demo'.")
@click.option("--out", "out_dir", required=True, metavar="CACHE",
              type=click.Path(file_okay=False), help="Folder to write the cache to.")
@click.option("-j", "--workers", default=None, type=click.IntRange(min=0), metavar="N",
              help="Decoding processes (0: none; default: one per CPU core).")
@click.option("--base", default=None, type=click.IntRange(min=1), metavar="N",
              help="Side of the rescaled, centre-cropped images (§2). Default: 256; 72 for demo.")
def prepare(data_dir: str, out_dir: str, workers: int | None, base: int | None) -> None:
    """Decode every image once into a memory-mappable cache; --data CACHE then reads it.

    The cache records the layout and where the val labels came from (devkit, Kaggle's
    LOC_val_solution.csv, or class folders).

    Rerun the same command to resume after an interruption.
    """
    dataset = prepare_dataset(data_dir, out_dir, base=base, workers=workers, progress=True)
    counts = ", ".join(f"{split} {dataset.size(split)}" for split in dataset.splits)
    skipped = f", {len(dataset.skipped)} skipped" if dataset.skipped else ""
    if dataset.tree_skipped:
        skipped += f", {len(dataset.tree_skipped)} directory entries skipped (see above)"
    click.echo(f"prepared {dataset.root}: {len(dataset.classes)} classes, {counts} images "
               f"({dataset.base}×{dataset.base}){skipped}")
