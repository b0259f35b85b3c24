"""Errors the figures report to a user: one line, no traceback (the CLI exits 2)."""
from __future__ import annotations

from ..errors import NetspecError


class VizError(NetspecError):
    """A figure that can't be drawn from what was given (a layer, a format, empty data)."""
