"""Using a network outside training: `netspec export` (ONNX) and `netspec predict`.

Layer: beside train and bench. These commands read saved runs (train/checkpoint.py), build
networks (runtime) and decode images (data), so they sit right of runtime; the ONNX writer
itself reads only the IR and parameter arrays and lives in codegen/onnx_export.py.
"""
