"""`netspec import`: networks from other frameworks' files, as spec text and arrays.

    caffe.py        deploy .prototxt (V1 and V2), .caffemodel, .binaryproto mean
    cudaconvnet.py  cuda-convnet(2) layers.cfg + layer-params.cfg (architecture and recipe)
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
    darknet (.cfg), and cuda-convnet (a .cfg whose first section is no darknet [net])."""
    suffix = Path(path).suffix.lower()
    if suffix == ".cfg":
        from .cudaconvnet import is_layer_file
        if is_layer_file(path):
            return "cudaconvnet"
    if suffix in FORMATS:
        return FORMATS[suffix]
    raise SpecError.file(f"can't tell the format from the name: netspec imports "
                         f"{', '.join(sorted(FORMATS))}", str(path))


def import_model(path, *, weights=None, mean=None, params=None, input_shape=None) -> Imported:
    """The network of `path` (and its weights file), in netspec's terms. SpecError listing
    every construct that netspec can't express; nothing is written. params, input_shape:
    cuda-convnet's layer-params file and the image size (C, H, W) its layer file lacks."""
    fmt = detect_format(path)
    if fmt == "cudaconvnet":
        from .cudaconvnet import import_cudaconvnet
        return import_cudaconvnet(path, params, input_shape, weights)
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
