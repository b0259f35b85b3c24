"""`netspec import`: networks from other frameworks' files, as spec text and arrays.

    caffe.py        deploy .prototxt (V1 and V2), .caffemodel, .binaryproto mean
    darknet.py      .cfg and .weights
    onnx.py         .onnx (with the onnx package)
    model.py        Imported / Layer: what every importer builds, and the spec it writes
    prototxt.py     protobuf text format reader (never evaluates anything)
    protowire.py    protobuf wire format reader

Each format module keeps a table from its layer types to converters (caffe.CONVERT, ...): a
new netspec layer type is one entry there. An importer reads files only: it never evaluates
or unpickles them. Everything a source has that netspec can't express is reported at once,
one error per construct (dsl.errors.SpecError), and nothing is written.

This is a side package: it imports dsl, kernel, ops and ir; the cli imports it.
"""
from __future__ import annotations

from pathlib import Path

from ..dsl.errors import SpecError
from .model import Imported, Layer

FORMATS = {".prototxt": "caffe", ".pt": "caffe", ".onnx": "onnx", ".cfg": "darknet"}


def detect_format(path) -> str:
    """The format of a model file, from its name: caffe (.prototxt), onnx (.onnx),
    darknet (.cfg)."""
    suffix = Path(path).suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    raise SpecError.file(f"can't tell the format from the name: netspec imports "
                         f"{', '.join(sorted(FORMATS))}", str(path))


def import_model(path, *, weights=None, mean=None) -> Imported:
    """The network of `path` (and its weights file), in netspec's terms. SpecError listing
    every construct that netspec can't express; nothing is written."""
    fmt = detect_format(path)
    if fmt == "caffe":
        from .caffe import import_caffe
        return import_caffe(path, weights, mean)
    if fmt == "onnx":
        from .onnx import import_onnx
        return import_onnx(path, weights, mean)
    if fmt == "darknet":
        from .darknet import import_darknet
        return import_darknet(path, weights, mean)
    raise AssertionError(fmt)


__all__ = ["FORMATS", "Imported", "Layer", "detect_format", "import_model"]
