"""Old name of saved_net.py, kept for netspec/viz/command.py until it imports saved_net."""
from .saved_net import run_neighbours, run_predictions

__all__ = ["run_predictions", "run_neighbours"]
