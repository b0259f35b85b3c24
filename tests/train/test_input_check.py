"""The spec and the image data agree before training: 1-channel specs read grey, other channel
counts are a spec error at the input line, non-square inputs are refused by compile, build
and train alike."""
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import netspec
from netspec.cli import main
from netspec.data import open_dataset
from netspec.dsl.errors import SpecError
from netspec.train.loop import Trainer, TrainOptions


def spec_text(channels=1, h=8, w=8, epochs=5):
    return f"""network grey
input {channels}x{h}x{w}
classes 2
conv c1 filters 4 size 3 relu weight gauss(0.01)
maxpool p1 size 2 stride 2
fc f1 outputs 2 weight gauss(0.01)
softmax prob
train
  batch 4
  epochs {epochs}
  sgd lr 0.001 momentum 0.9 weight_decay 0.0005
  schedule none
"""


@pytest.fixture
def dark_and_light(tmp_path):
    """Two classes that differ in brightness only through their hue: dark blue and yellow."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for cls, colour in (("blue", (20, 30, 160)), ("yellow", (230, 220, 40))):
            d = tmp_path / "data" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(colour) + rng.integers(-20, 21, (11, 13, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")
    return tmp_path / "data"


def test_a_one_channel_spec_trains_on_grey_images(dark_and_light, tmp_path):
    spec = tmp_path / "grey.net"
    spec.write_text(spec_text(1))
    result = Trainer(TrainOptions(spec=str(spec), data=str(dark_and_light), backend="numpy",
                                  out=str(tmp_path / "run"), progress=False),
                     echo=lambda *a, **k: None).run()
    assert result["last"]["val_top1_error"] == 0.0


def test_grey_batches_are_pillows_luma_minus_the_mean_luma(dark_and_light):
    ds = open_dataset(dark_and_light, base=8)
    ds.channels = 1
    with ds.loader("val", batch_size=8, crop=8, train=False) as batches:
        x, _ = next(iter(batches))
    assert x.shape == (8, 1, 8, 8)
    mean = np.asarray(ds.mean, np.float64)
    mean_luma = mean @ np.array([0.299, 0.587, 0.114])
    for i in range(8):
        pillow_l = np.asarray(Image.fromarray(ds.image("val", i)).convert("L"), np.float64)
        # Pillow rounds its L to an integer: within half a grey level (plus float32 rounding)
        assert np.abs(x[i, 0] - (pillow_l - mean_luma)).max() <= 0.51
    with ds.ten_crop_batches("val", batch_size=8, crop=6) as views:
        x10, _ = next(iter(views))
    assert x10.shape == (8, 10, 1, 6, 6)
    pillow_l = np.asarray(Image.fromarray(ds.image("val", 0)).convert("L"), np.float64)
    assert np.abs(x10[0, 0, 0] - (pillow_l - mean_luma)[:6, :6]).max() <= 0.51  # top-left


def test_other_channel_counts_are_a_spec_error_at_the_input_line(tmp_path):
    spec = tmp_path / "four.net"
    spec.write_text(spec_text(4))
    r = CliRunner().invoke(main, ["train", "--spec", str(spec), "--data",
                                  str(tmp_path / "not-read"), "--backend", "numpy"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"{spec}:2:7: error: input has 4 channels" in r.output
    assert "    2 | input 4x8x8" in r.output and "^" in r.output


def test_non_square_input_is_refused_by_compile_build_and_train_alike(tmp_path):
    spec = tmp_path / "wide.net"
    spec.write_text(spec_text(3, 8, 12))
    message = "input 8x12 is not square"
    r = CliRunner().invoke(main, ["compile", str(spec)])
    assert r.exit_code == 2 and message in r.output and f"{spec}:2:7" in r.output
    with pytest.raises(SpecError, match=message):
        netspec.build(str(spec), backend="numpy")
    r = CliRunner().invoke(main, ["train", "--spec", str(spec), "--data", "demo",
                                  "--backend", "numpy"])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
