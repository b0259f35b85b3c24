"""The clocks `netspec bench` (bench/timing.py) times a training step with, one per kind of
backend; a backend hands out its own through `Net.clock()`.

A clock hooks into one net and, between `start()` and `stop()`, sums the milliseconds of
every (layer, direction) row: `stop()` returns {(layer, direction): ms}, `kernels()`
{kernel name: (ms, launches)} (empty where there are no kernels), and `close()` unhooks it.
`step_ms(host_ms)` is the whole step's time: the host clock's `host_ms` unless the device
has a clock of its own. `host_update` says whether the SGD update is timed by the host
around the call (True) or is among the rows `stop()` returns (device kernels).
"""
from __future__ import annotations

import time
from collections import defaultdict

UPDATE_ROW = "sgd"          # the layer name of the SGD update's row


def row_key(step) -> tuple[str, str]:
    """The (layer, direction) row a plan step's time counts toward."""
    if step.phase == "update":
        return UPDATE_ROW, "update"
    return step.layer, step.phase


class HostClock:
    """perf_counter around each layer part's forward/backward and the loss (backends whose
    layers run on the host)."""

    name = "host perf_counter per layer part"
    host_update = True

    def __init__(self, net):
        self.net = net
        self.times: dict[tuple[str, str], float] = defaultdict(float)
        fwd, bwd, loss = net.forward_part, net.backward_part, net.softmax_loss

        def forward_part(layer, part, *a, **k):
            t = time.perf_counter()
            out = fwd(layer, part, *a, **k)
            self.times[layer.name, "forward"] += time.perf_counter() - t
            return out

        def backward_part(layer, part, *a, **k):
            t = time.perf_counter()
            out = bwd(layer, part, *a, **k)
            self.times[layer.name, "backward"] += time.perf_counter() - t
            return out

        def softmax_loss(z, labels):
            t = time.perf_counter()
            out = loss(z, labels)
            self.times[net.head.name, "forward"] += time.perf_counter() - t
            return out

        # instance attributes shadow the methods for this net only
        net.forward_part, net.backward_part, net.softmax_loss = \
            forward_part, backward_part, softmax_loss

    def start(self):
        self.times.clear()

    def step_ms(self, host_ms: float) -> float:
        return host_ms

    def stop(self) -> dict[tuple[str, str], float]:
        return {k: v * 1e3 for k, v in self.times.items()}

    def kernels(self):
        return {}

    def close(self):
        for name in ("forward_part", "backward_part", "softmax_loss"):
            self.net.__dict__.pop(name, None)


class DeviceClock:
    """What the device clocks share (a PlanNet's `step_hook` sees every step): summing (step,
    ms) per table row and per kernel, and unhooking from the net."""

    host_update = False

    def _tally(self, timed) -> dict:
        times = defaultdict(float)
        self._kernel_ms = defaultdict(float)
        self._launches = defaultdict(int)
        for step, ms in timed:
            times[row_key(step)] += ms
            if step.kind == "launch":
                self._kernel_ms[step.kernel] += ms
                self._launches[step.kernel] += 1
        return dict(times)

    def step_ms(self, host_ms: float) -> float:
        return host_ms

    def kernels(self):
        """kernel name -> (ms, launches): one kernel may serve several parts."""
        return {k: (v, self._launches[k]) for k, v in self._kernel_ms.items()}

    def close(self):
        self.net.step_hook = None
