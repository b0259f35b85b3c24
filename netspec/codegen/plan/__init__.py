"""The launch plan: an ordered list of steps that every runtime executes, and its memory plan.

Steps, in dependency order (each logical GPU is one stream; steps on a stream run in order):

- `launch`   a kernel on a part's GPU, with its buffers (and scalars) in parameter order;
- `copy`     a contiguous block from one buffer to another: gathering a part's sources into
             its input, or a transfer between logical GPUs (`src_gpu != dst_gpu`); it runs on
             the sender's stream;
- `upload` / `download`   host <-> device: the input, labels / probabilities, per-image
             losses. Dropout masks never cross: a launch draws them on the device from the
             run's noise key, passed as scalars (ops/dropout.py, kernel/philox.py).

`deps` lists, per step, the steps on *other* streams it must wait for (the runtimes turn them
into events).

The modules, in the order a plan is made:

- `model`      the records: Buffer, Step, ParamBinding, LaunchPlan and their kinds;
- `steps`      StepRecorder: buffers declared, steps added, kernels shared between parts;
- `roles`      which buffer each part reads and writes; where each transfer lands;
- `gradients`  gradient slices delivered to their sources and summed;
- `update`     the SGD launches and the parameter bindings;
- `memory`     offsets: the parameter blocks and the arena (first fit);
- `waits`      the cross-stream waits, from the placed memory each step touches;
- `builder`    build_plan: the graph walked through forward, backward and update.
"""
from .builder import PlanBuilder, build_plan
from .gradients import ACCUMULATE, ACCUMULATE_SLOTS, ACCUMULATE_SLOTS_LOCAL
from .memory import GREEDY_MAX
from .model import (
    ALIGN,
    PHASES,
    Buffer,
    BufferKind,
    HostData,
    LaunchPlan,
    ParamBinding,
    Phase,
    Step,
    StepKind,
    When,
)

__all__ = ["ACCUMULATE", "ACCUMULATE_SLOTS", "ACCUMULATE_SLOTS_LOCAL", "ALIGN", "GREEDY_MAX",
           "PHASES", "Buffer", "BufferKind", "HostData", "LaunchPlan", "ParamBinding", "Phase",
           "PlanBuilder", "Step", "StepKind", "When", "build_plan"]
