"""Crop, flip and 10-crop geometry, on images whose pixels say where they are."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec.data.augment import (
    TEN_CROP_ORDER,
    BatchPlan,
    center_offset,
    crop_view,
    draw_train_plan,
    ten_crop,
    ten_crop_offsets,
    write_planned_views,
    write_ten_crops,
    write_view,
)

from .imagefiles import coordinate_image


def rows_cols(view_hwc):
    return view_hwc[..., 0].astype(int), view_hwc[..., 1].astype(int)


def test_crop_view_takes_the_window_at_top_left():
    image = coordinate_image(16)
    rows, cols = rows_cols(crop_view(image, 3, 5, 8))
    assert np.array_equal(rows, np.repeat(np.arange(3, 11)[:, None], 8, axis=1))
    assert np.array_equal(cols, np.repeat(np.arange(5, 13)[None, :], 8, axis=0))


def test_flip_mirrors_columns_only():
    image = coordinate_image(16)
    rows, cols = rows_cols(crop_view(image, 3, 5, 8, flip=True))
    assert np.array_equal(rows[:, 0], np.arange(3, 11))
    assert np.array_equal(cols[0], np.arange(12, 4, -1))  # column j shows 5 + 7 - j


@pytest.mark.parametrize("base, crop, mid", [(256, 224, 16), (72, 64, 4), (9, 4, 2), (8, 8, 0)])
def test_center_offset(base, crop, mid):
    assert center_offset(base, crop) == mid


def test_ten_crop_positions_and_order():
    base, crop = 10, 6
    views = ten_crop(coordinate_image(base), crop)
    assert views.shape == (10, crop, crop, 3) and len(TEN_CROP_ORDER) == 10
    # Top-left pixel of each unflipped view (row, col), and its flip's top-right pixel.
    corners = {"top-left": (0, 0), "top-right": (0, 4), "bottom-left": (4, 0),
               "bottom-right": (4, 4), "centre": (2, 2)}
    for v, name in enumerate(TEN_CROP_ORDER):
        rows, cols = rows_cols(views[v])
        key = name.replace(" flipped", "")
        top, left = corners[key]
        assert rows.min() == top and rows.max() == top + crop - 1
        assert cols.min() == left and cols.max() == left + crop - 1
        if name.endswith("flipped"):
            assert cols[0, 0] == left + crop - 1 and cols[0, -1] == left
        else:
            assert cols[0, 0] == left and cols[0, -1] == left + crop - 1
    assert ten_crop_offsets(base, crop)[4] == (2, 2, False)


def planar(image_hwc):
    return np.ascontiguousarray(image_hwc.transpose(2, 0, 1))


def test_write_view_subtracts_the_mean_at_the_same_place_and_adds_the_shift():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
    mean = rng.random((12, 12, 3), dtype=np.float32) * 255
    shift = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    for flip in (False, True):
        out = np.empty((3, 5, 5), np.float32)
        write_view(out, planar(image), planar(mean), 4, 6, flip, shift)
        expected = image[4:9, 6:11].astype(np.float64) - mean[4:9, 6:11] + shift
        if flip:
            expected = expected[:, ::-1]
        np.testing.assert_allclose(out, expected.transpose(2, 0, 1), atol=1e-4)


def test_planned_views_follow_the_plan():
    image = coordinate_image(20)
    plan = BatchPlan(offsets=np.array([[0, 0], [3, 7], [10, 10]]),
                     flips=np.array([False, True, False]), shifts=None)
    out = np.empty((3, 3, 10, 10), np.float32)
    write_planned_views(out, [planar(image)] * 3, np.zeros((3, 20, 20), np.float32), plan)
    for i, ((top, left), flip) in enumerate(zip(plan.offsets, plan.flips)):
        assert out[i, 0].min() == top and out[i, 1].min() == left
        assert out[i, 1, 0, 0] == (left + 9 if flip else left)


def test_ten_crops_of_a_batch_match_ten_crop():
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, size=(9, 9, 3), dtype=np.uint8) for _ in range(2)]
    mean = rng.random((9, 9, 3), dtype=np.float32) * 255
    out = np.empty((2, 10, 3, 5, 5), np.float32)
    write_ten_crops(out, [planar(i) for i in images], planar(mean))
    for i, image in enumerate(images):
        expected = ten_crop(image.astype(np.float64) - mean, 5).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(out[i], expected, atol=1e-4)


def test_random_crops_cover_every_offset_and_flip_half_the_time():
    rng = np.random.default_rng(0)
    plan = draw_train_plan(rng, 20000, 10, 7, flip=True, pca=None, pca_sigma=0.1)
    assert plan.offsets.min() == 0 and plan.offsets.max() == 3
    counts = np.bincount(plan.offsets.ravel(), minlength=4)
    assert np.all(np.abs(counts / counts.sum() - 0.25) < 0.02)
    assert abs(plan.flips.mean() - 0.5) < 0.02
    assert plan.shifts is None


def test_flip_off_keeps_the_same_crops():
    a = draw_train_plan(np.random.default_rng(9), 50, 32, 24, flip=True, pca=None, pca_sigma=0)
    b = draw_train_plan(np.random.default_rng(9), 50, 32, 24, flip=False, pca=None, pca_sigma=0)
    assert np.array_equal(a.offsets, b.offsets) and not b.flips.any() and a.flips.any()


@settings(max_examples=60, deadline=None)
@given(base=st.integers(1, 40), data=st.data())
def test_any_view_is_the_numpy_window(base, data):
    crop = data.draw(st.integers(1, base))
    top = data.draw(st.integers(0, base - crop))
    left = data.draw(st.integers(0, base - crop))
    flip = data.draw(st.booleans())
    rng = np.random.default_rng(base * 1000 + crop)
    image = rng.integers(0, 256, size=(base, base, 3), dtype=np.uint8)
    mean = rng.random((base, base, 3), dtype=np.float32) * 255
    out = np.empty((3, crop, crop), np.float32)
    write_view(out, planar(image), planar(mean), top, left, flip)
    window = image.astype(np.float64)[top:top + crop, left:left + crop] - \
        mean[top:top + crop, left:left + crop]
    if flip:
        window = np.flip(window, axis=1)
    np.testing.assert_allclose(out, window.transpose(2, 0, 1), atol=1e-4)
