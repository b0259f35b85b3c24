"""`netspec bench`: per-layer timing of a training step (timing.py) and its command
(command.py)."""
from .timing import BenchResult, KernelRow, Row, bench, format_table, row_flops

__all__ = ["BenchResult", "KernelRow", "Row", "bench", "format_table", "row_flops"]
