"""`netspec predict`: top-k classes of a trained network for image files.

Each image goes through the run's own test-time preprocessing: decoded as the data pipeline
decodes (shorter side rescaled to the run's base size, central base×base square, §2), the
run's mean image subtracted, and then either the centre crop or the paper's 10 views (four
corners, centre, and their reflections, softmax averaged, §4.1). A file that can't be decoded
gets the pipeline's reason and the others go on.

An ONNX file written by `netspec export` (codegen/onnx_export.py) predicts the same way,
through onnxruntime: its metadata carries the mean image, base, crop and class ids
(`Predictor.from_onnx`).
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.augment import center_offset, write_ten_crops, write_view
from ..data.decode import UnreadableImage, decode_image
from ..data.layouts import display_names
from ..errors import RunError
from .input_check import image_channels
from .run_schema import PREDICT_STATE, check_state
from .saved_run import read_run

LUMA = np.array([0.299, 0.587, 0.114], np.float32)   # ITU-R 601-2, as the loader's grey


@dataclass
class Predictor:
    """A run's network with its preprocessing. mean: float32 (3, base, base), 0..255.
    classes: the run's class ids (folder names or wnids); names: their human names, made
    unique (data.layouts.display_names). channels: 3, or 1 for a network reading grey."""

    net: object
    classes: list[str]
    mean: np.ndarray
    crop: int
    names: list[str] | None = None
    channels: int = 3

    @property
    def base(self) -> int:
        return self.mean.shape[-1]

    @classmethod
    def from_run(cls, checkpoint, backend: str = "numpy") -> Predictor:
        """Load a run directory (weights, spec, class names and mean image from its state).
        RunError if the run lacks any of them or its weights don't fit its spec."""

        from ..ir.build import build_graph
        from ..runtime import build

        params, state = read_run(checkpoint)
        missing = [k for k in ("spec_text", "classes", "data_mean") if k not in state]
        if missing:
            raise RunError(f"{checkpoint}: the run state lacks {', '.join(missing)}; predict "
                           f"needs a run directory written by netspec train")
        check_state(state, checkpoint, PREDICT_STATE)
        graph = build_graph(state["spec_text"])
        if len(state["classes"]) != graph.classes:
            raise RunError(f"{checkpoint}: field 'classes' of the run state lists "
                           f"{len(state['classes'])} classes, but the network has "
                           f"{graph.classes} outputs")
        from ..ir.memory import check_memory
        check_memory(graph, 1, False, "predicting with")
        channels = image_channels(graph)
        net = build(graph, backend)
        try:
            net.load_parameters(params)
        except ValueError as e:
            raise RunError(f"{checkpoint}: the checkpoint does not match its spec: {e}") \
                from None
        try:
            mean = np.asarray(state["data_mean"], np.float32)
        except ValueError:                   # rows of different lengths
            raise RunError(f"{checkpoint}: field 'data_mean' of the run state is not a "
                           f"(base, base, 3) array: its rows differ in length") from None
        crop = graph.recipe.crop or graph.input_shape[1]
        if mean.ndim != 3 or mean.shape[0] != mean.shape[1] or mean.shape[2] != 3 \
                or mean.shape[0] < crop:
            raise RunError(f"{checkpoint}: the run's mean image has shape {mean.shape}, not "
                           f"(base, base, 3) with base >= the crop {crop}")
        classes = list(state["classes"])
        names = state.get("class_names")
        names = display_names(classes, names) if names and len(names) == len(classes) \
            else list(classes)
        return cls(net, classes, np.ascontiguousarray(mean.transpose(2, 0, 1)), crop, names,
                   channels)

    @classmethod
    def from_onnx(cls, path) -> Predictor:
        """An ONNX file written by `netspec export`, run by onnxruntime on the CPU, with the
        preprocessing its metadata states (`netspec.preprocessing`, `netspec.mean_image`,
        `netspec.classes`, `netspec.class_names`: codegen/onnx_export.py). A file exported
        without a run has no mean image: its images are taken at the crop size, nothing
        subtracted. RunError, naming the file and the field, when onnxruntime is missing,
        the file is not a model onnxruntime can load, or its metadata is missing or wrong."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunError(f"{path}: predicting with an ONNX model needs onnxruntime "
                           f"(pip install onnxruntime)") from None
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:                 # onnxruntime's own error types vary by version
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RunError(f"{path}: onnxruntime cannot load this model: {first}") from None
        meta = session.get_modelmeta().custom_metadata_map
        net = OnnxNet(session)
        pre = _onnx_field(path, meta, "netspec.preprocessing", dict)
        for key in ("crop", "base"):
            if not isinstance(pre.get(key), int) or isinstance(pre[key], bool) or \
                    pre[key] < 1:
                raise RunError(f"{path}: metadata 'netspec.preprocessing' field '{key}' is "
                               f"{pre.get(key)!r}, not a positive integer")
        crop, base = pre["crop"], pre["base"]
        if base < crop or pre.get("channel_order") != "RGB" or pre.get("layout") != "NCHW":
            raise RunError(f"{path}: metadata 'netspec.preprocessing' states base {base}, "
                           f"crop {crop}, {pre.get('channel_order')} "
                           f"{pre.get('layout')}: predict reads RGB NCHW with base >= crop")
        if net.input_shape != (net.channels, crop, crop) or net.channels not in (1, 3):
            raise RunError(f"{path}: the model reads {net.input_shape}, but its metadata "
                           f"states a {crop}x{crop} crop of 1 or 3 channels")
        mean = _onnx_mean(path, meta, base)
        n_out = net.outputs
        classes = _onnx_field(path, meta, "netspec.classes", list, [str(i) for i in range(n_out)])
        names = _onnx_field(path, meta, "netspec.class_names", list, None)
        for key, value in (("netspec.classes", classes), ("netspec.class_names", names)):
            if value is not None and (len(value) != n_out or
                                      not all(isinstance(c, str) for c in value)):
                raise RunError(f"{path}: metadata '{key}' lists {len(value)} entries, not "
                               f"{n_out} strings (the model's outputs)")
        names = display_names(classes, names) if names else list(classes)
        return cls(net, classes, mean, crop, names, net.channels)

    def views(self, image: np.ndarray, ten_crop: bool) -> np.ndarray:
        """(V, 3, crop, crop) float32 views of a uint8 (base, base, 3) image, V = 1 or 10."""
        planar = np.ascontiguousarray(image.transpose(2, 0, 1))
        if ten_crop:
            out = np.empty((1, 10, 3, self.crop, self.crop), np.float32)
            write_ten_crops(out, [planar], self.mean)
            out = out[0]
        else:
            out = np.empty((1, 3, self.crop, self.crop), np.float32)
            mid = center_offset(self.base, self.crop)
            write_view(out[0], planar, self.mean, mid, mid, False)
        if self.channels == 1:            # a 1xHxW network reads the views' luma
            out = np.einsum("vchw,c->vhw", out, LUMA)[:, None]
        return np.ascontiguousarray(out)

    def probabilities(self, images: Sequence[np.ndarray], ten_crop: bool) -> np.ndarray:
        """Softmax probabilities (N, classes) of decoded images, 10 views averaged if asked."""
        x = np.concatenate([self.views(im, ten_crop) for im in images])
        p = self.net.predict_proba(x.astype(self.net.dtype, copy=False))
        return p.reshape(len(images), -1, p.shape[-1]).mean(axis=1)


class OnnxNet:
    """The part of a Net that Predictor uses (`dtype`, `predict_proba`), over an onnxruntime
    session of a netspec export, whose output is already the softmax."""

    dtype = np.float32

    def __init__(self, session):
        self.session = session
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape[1:])
        self.channels = self.input_shape[0] if self.input_shape else 0
        self.outputs = out.shape[-1] if isinstance(out.shape[-1], int) else 0

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, classes) of preprocessed views (N, C, crop, crop)."""
        y, = self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})
        return y.reshape(len(x), -1)


_MISSING = object()


def _onnx_field(path, meta: dict, key: str, kind: type, default=_MISSING):
    """A JSON metadata field of an exported model, checked to be a `kind`."""
    if key not in meta:
        if default is not _MISSING:
            return default
        raise RunError(f"{path}: the model lacks metadata '{key}': predict takes ONNX files "
                       f"written by netspec export")
    try:
        value = json.loads(meta[key])
    except ValueError:
        raise RunError(f"{path}: metadata '{key}' is not JSON") from None
    if not isinstance(value, kind):
        raise RunError(f"{path}: metadata '{key}' is a {type(value).__name__}, not a "
                       f"{kind.__name__}")
    return value


def _onnx_mean(path, meta: dict, base: int) -> np.ndarray:
    """The mean image (3, base, base) float32 from `netspec.mean_image`, zeros without one."""
    if "netspec.mean_image" not in meta:
        return np.zeros((3, base, base), np.float32)
    try:
        raw = base64.b64decode(meta["netspec.mean_image"], validate=True)
    except ValueError:
        raise RunError(f"{path}: metadata 'netspec.mean_image' is not base64") from None
    if len(raw) != base * base * 3 * 4:
        raise RunError(f"{path}: metadata 'netspec.mean_image' holds {len(raw)} bytes, not "
                       f"{base}x{base}x3 float32 ({base * base * 12} bytes)")
    mean = np.frombuffer(raw, "<f4").reshape(base, base, 3)
    if not np.isfinite(mean).all():
        raise RunError(f"{path}: metadata 'netspec.mean_image' holds values that are not "
                       f"finite")
    return np.ascontiguousarray(mean.transpose(2, 0, 1), np.float32)


def load_predictor(model, backend: str = "numpy") -> Predictor:
    """A run (directory or checkpoint: `Predictor.from_run` on `backend`) or an exported
    `.onnx` file (`Predictor.from_onnx`, onnxruntime's CPU)."""
    if str(model).lower().endswith(".onnx") and Path(model).is_file():
        return Predictor.from_onnx(model)
    return Predictor.from_run(model, backend)


def predict_files(predictor: Predictor, paths: Sequence[str], *, ten_crop: bool = False,
                  top: int = 5, batch_size: int = 16) -> Iterator[dict]:
    """One dict per path, in order: {"image", "views", "top": [{"rank", "label", "class",
    "name", "probability"}, ...]} (highest first, at most `top`; "class" is the run's class
    id, "name" its human name), or {"image", "error"} with the data pipeline's reason for a
    file it can't decode."""
    k = min(top, len(predictor.classes))
    pending: list[tuple[str, np.ndarray]] = []

    def flush():
        probs = predictor.probabilities([im for _, im in pending], ten_crop)
        for (path, _), p in zip(pending, probs):
            order = np.argsort(-p, kind="stable")[:k]
            yield {"image": path, "views": 10 if ten_crop else 1,
                   "top": [{"rank": r + 1, "label": int(i), "class": predictor.classes[i],
                            "name": (predictor.names or predictor.classes)[i],
                            "probability": float(p[i])} for r, i in enumerate(order)]}
        pending.clear()

    for path in paths:
        try:
            image = decode_image(path, predictor.base)
        except UnreadableImage as e:
            yield from flush() if pending else ()
            yield {"image": str(path), "error": str(e)}
            continue
        pending.append((str(path), image))
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        yield from flush()
