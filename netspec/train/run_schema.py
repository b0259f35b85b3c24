"""The schemas of what a run directory holds, checked whenever netspec reads them back
(netspec/schema.py): the run state (state.json, and the copy in each checkpoint's metadata),
the launch record (launch.json) and the rows of metrics.jsonl.

Every field's type and range is checked where it is present; which fields must be present
depends on the reader: `--resume` needs the position and the schedule, `predict` the classes
and the mean image, `eval` and `export` nothing beyond the types (a bare .safetensors file with
--spec has no state at all). A field that doesn't fit is a RunError naming the file and the
field: the CLI's exit status 2, never a traceback.
"""
from __future__ import annotations

from ..errors import RunError
from ..schema import Any, Bool, Int, List, Map, Num, Obj, Opt, Str, Tuple, validate

COUNT = Int(min=0)
POSITIVE = Num(min=0, min_open=True)
RATE = Num(min=0)                                 # a learning rate
PIXEL = Num(min=0, max=255)

SCHEDULE = Obj({
    "kind": Str(choices=("plateau", "steps", "none")), "lr": RATE, "factor": POSITIVE,
    "patience": COUNT, "max_drops": COUNT, "drop_epochs": List(COUNT),
    "best": Opt(Num()), "bad_evals": COUNT, "drops": COUNT,
    "history": List(Obj({"epoch": COUNT, "lr": RATE}, required=("epoch", "lr"))),
}, required=("kind", "lr"), closed=True)        # Schedule(**fields): nothing else may be there

METER = Tuple((Num(), Num(min=0)))                # (sum, count)

FINGERPRINT = Map(Obj({"files": COUNT, "sha256": Str()}, required=("files", "sha256")))

OVERRIDES = Obj({"epochs": Int(min=1), "batch_size": Int(min=1), "lr": POSITIVE}, closed=True)

STATE = Obj({
    "format": Int(min=1), "network": Str(),
    "epoch": COUNT, "batch": COUNT, "step": COUNT, "lr": RATE,
    "schedule": SCHEDULE, "seed": Int(), "rng": Any(), "replicas": Int(min=1),
    "loader": Obj({"epoch": COUNT, "batch": COUNT}),
    "meters": Opt(Obj({"loss": METER, "top1": METER, "top5": METER}, closed=True)),
    "classes": List(Str()), "class_names": List(Str()),
    "data_layout": Str(), "labels_source": Str(), "spec_text": Str(), "data": Opt(Str()),
    "data_mean": List(List(List(PIXEL, length=3))),
    "data_pca": Obj({"eigenvalues": List(Num(min=0), length=3),
                     "eigenvectors": List(List(Num(), length=3), length=3)}),
    "recipe": Map(), "overrides": OVERRIDES,
    "backend": Str(), "backend_requested": Str(), "workers": COUNT,
    "max_steps": Opt(COUNT), "checkpoint_every": Opt(Int(min=1)), "keep": Opt(Int(min=1)),
    "init_from": Opt(Str()),
    "data_fingerprint": FINGERPRINT, "data_changes": List(Map()),
    "allow_data_change": Bool(),
    "best": Opt(Obj({"epoch": Int(min=1), "step": COUNT, "val_top1_error": Num(min=0, max=1),
                     "val_top5_error": Num(min=0, max=1)},
                    required=("epoch", "step", "val_top1_error", "val_top5_error"))),
})

# what `--resume` reads from a checkpoint's state
RESUME_STATE = STATE.requiring("spec_text", "data", "seed", "step", "epoch", "batch",
                               "schedule", data=Str())
# what `predict` reads
PREDICT_STATE = STATE.requiring("spec_text", "classes", "data_mean")

LAUNCH = Obj({
    "spec_text": Str(), "overrides": OVERRIDES, "data": Str(), "backend_requested": Str(),
    "seed": Int(), "workers": COUNT, "checkpoint_every": Opt(Int(min=1)),
    "keep": Opt(Int(min=1)), "init_from": Opt(Str()), "data_fingerprint": FINGERPRINT,
}, required=("spec_text", "data", "seed"))

ERROR = Opt(Num(min=0, max=1, finite=False))     # NaN where there were no val images
METRICS_ROW = Obj({
    "epoch": Int(min=1), "step": COUNT, "lr": RATE, "train_loss": Opt(Num(finite=False)),
    "train_top1_error": ERROR, "train_top5_error": ERROR,
    "val_loss": Opt(Num(finite=False)), "val_top1_error": ERROR, "val_top5_error": ERROR,
    "val_class_top1_error": Map(ERROR), "images_per_sec": Num(min=0, finite=False),
    "time": Num(), "best_epoch": Opt(Int(min=1)), "best_val_top1_error": ERROR,
}, required=("epoch",))


def check_state(state, where, schema: Obj = STATE) -> dict:
    """`state` if it fits `schema`, else a RunError naming `where` (the file) and the field."""
    return validate(state, schema, str(where), RunError,
                    hint="the run state was changed or damaged; restore it from a backup or "
                         "start the run again")


def check_metrics_row(row, where) -> dict:
    return validate(row, METRICS_ROW, str(where), RunError,
                    hint="fix or remove that line of metrics.jsonl")
