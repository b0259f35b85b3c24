"""Learning-rate schedules.

`plateau` is the paper's heuristic (§5): divide the learning rate by 10 when the validation
error stops improving, at most three times. "Stops improving" is made precise as: no new best
validation top-1 error for `patience` evaluations in a row; an evaluation without a finite
error (no validation images, a diverged net) does not count either way. `steps` multiplies by
`factor` at the listed epochs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class Schedule:
    kind: str                 # 'plateau' | 'steps' | 'none'
    lr: float                 # the current learning rate
    factor: float = 0.1
    patience: int = 2
    max_drops: int = 3
    drop_epochs: tuple[int, ...] = ()
    best: float | None = None
    bad_evals: int = 0
    drops: int = 0
    history: list[dict] = field(default_factory=list)

    @classmethod
    def from_recipe(cls, recipe, lr: float | None = None) -> Schedule:
        return cls(kind=recipe.schedule, lr=recipe.lr if lr is None else lr,
                   factor=recipe.factor, patience=recipe.patience, max_drops=recipe.max_drops,
                   drop_epochs=tuple(recipe.drop_epochs))

    def observe(self, epoch: int, val_error: float) -> bool:
        """Record the validation error after `epoch` (1-based, completed); return whether the
        learning rate was reduced for the next epoch."""
        dropped = False
        if self.kind == "plateau" and not math.isfinite(val_error):
            pass    # no measurement (no images, or a diverged net) is not "no improvement"
        elif self.kind == "plateau":
            if self.best is None or val_error < self.best:
                self.best, self.bad_evals = val_error, 0
            else:
                self.bad_evals += 1
                if self.bad_evals >= self.patience and self.drops < self.max_drops:
                    dropped = True
                    self.bad_evals = 0
        elif self.kind == "steps":
            if epoch in self.drop_epochs:
                dropped = True
        if dropped:
            self.lr *= self.factor
            self.drops += 1
            self.history.append({"epoch": epoch, "lr": self.lr})
        return dropped

    def state(self) -> dict:
        d = asdict(self)
        d["drop_epochs"] = list(self.drop_epochs)
        return d

    @classmethod
    def from_state(cls, d: dict) -> Schedule:
        d = dict(d)
        d["drop_epochs"] = tuple(d.get("drop_epochs", ()))
        return cls(**d)
