"""Where netspec keeps data it can rebuild: the demo dataset and folder statistics.

$NETSPEC_CACHE_DIR if set, else $XDG_CACHE_HOME/netspec, else ~/.cache/netspec.
"""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    explicit = os.environ.get("NETSPEC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "netspec"
    return Path.home() / ".cache" / "netspec"
