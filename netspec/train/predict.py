"""`netspec predict`: top-k classes of a trained network for image files.

Each image goes through the run's own test-time preprocessing: decoded as the data pipeline
decodes (shorter side rescaled to the run's base size, central base×base square, §2), the
run's mean image subtracted, and then either the centre crop or the paper's 10 views (four
corners, centre, and their reflections, softmax averaged, §4.1). A file that can't be decoded
gets the pipeline's reason and the others go on.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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
