"""The learning-rate schedule: reductions at the right evaluations, never more than 3."""
from netspec.dsl.spec import Recipe
from netspec.train.schedule import Schedule


def run(errors, **kw):
    s = Schedule.from_recipe(Recipe(**kw))
    lrs = []
    for epoch, e in enumerate(errors, start=1):
        s.observe(epoch, e)
        lrs.append(s.lr)
    return s, lrs


def test_plateau_reduces_after_patience_evaluations_without_improvement():
    # best 0.8 at epoch 2; epochs 3 and 4 don't improve -> the 2nd bad evaluation (epoch 4)
    # divides by 10; epoch 5 improves (new best 0.7); 6, 7 don't -> divide at epoch 7.
    errors = [0.9, 0.8, 0.8, 0.85, 0.7, 0.7, 0.75, 0.6]
    s, lrs = run(errors, lr=0.01, schedule="plateau", patience=2, factor=0.1)
    expected = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.0001, 0.0001]
    assert all(abs(a - b) < 1e-12 for a, b in zip(lrs, expected)), lrs
    assert [h["epoch"] for h in s.history] == [4, 7]


def test_plateau_never_more_than_max_drops():
    s, lrs = run([0.5] * 30, lr=0.01, schedule="plateau", patience=1, factor=0.1, max_drops=3)
    assert s.drops == 3
    assert abs(lrs[-1] - 1e-5) < 1e-15
    # the drops come at evaluations 2, 3, 4 (each one is a non-improvement after a drop)
    assert [h["epoch"] for h in s.history] == [2, 3, 4]


def test_steps_at_listed_epochs():
    s, lrs = run([0.5] * 6, lr=1.0, schedule="steps", drop_epochs=(2, 5), factor=0.5)
    assert lrs == [1.0, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_none_is_constant_and_state_round_trips():
    s, lrs = run([0.9, 0.9, 0.9, 0.9], lr=0.1, schedule="none")
    assert lrs == [0.1] * 4
    s2 = Schedule.from_state(s.state())
    assert s2 == s


def test_an_evaluation_without_a_finite_error_is_not_a_plateau():
    # no val images (nan) or a diverged net (nan): neither a new best nor a bad evaluation
    nan = float("nan")
    s, lrs = run([0.9, nan, nan, nan, nan, 0.95, 0.96], lr=0.01, schedule="plateau",
                 patience=2, factor=0.1)
    assert lrs[:6] == [0.01] * 6 and abs(lrs[6] - 0.001) < 1e-15
    assert s.best == 0.9 and [h["epoch"] for h in s.history] == [7]
