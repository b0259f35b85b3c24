"""torchvision's own model definitions (resnet.py, vgg.py, squeezenet.py, ...), loaded without
`import torchvision`: the PyPI wheel's compiled ops (torchvision::nms) don't load next to a
CPU-only torch, and the model files need none of them. The package and the modules the model
files import only for weights and logging are stand-ins; each model file itself is the
installed torchvision's, run as is. Random weights; nothing is downloaded."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _package(name: str, path: str | None) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__path__ = [path] if path else []
    sys.modules[name] = m
    return m


def torchvision_models(name: str):
    """The module torchvision.models.<name> (e.g. 'resnet'), from the installed wheel.
    pytest.skip when torchvision is not installed (it is in netspec's test extra)."""
    import pytest
    spec = importlib.util.find_spec("torchvision") if "torchvision" not in sys.modules \
        else sys.modules["torchvision"].__spec__
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchvision is not installed (pip install 'netspec[test]')")
    root = list(spec.submodule_search_locations)[0]
    if not hasattr(sys.modules.get("torchvision"), "_netspec_stand_in"):
        tv = _package("torchvision", root)
        tv._netspec_stand_in = True
        tv.__spec__ = spec
        _package("torchvision.models", f"{root}/models")
        _package("torchvision.transforms", f"{root}/transforms")
        presets = types.ModuleType("torchvision.transforms._presets")
        presets.ImageClassification = type("ImageClassification", (), {})
        sys.modules[presets.__name__] = presets
        utils = types.ModuleType("torchvision.utils")
        utils._log_api_usage_once = lambda obj: None
        sys.modules[utils.__name__] = utils
        replaced = types.ModuleType("torchvision._internally_replaced_utils")
        replaced.load_state_dict_from_url = None
        sys.modules[replaced.__name__] = replaced
    return importlib.import_module(f"torchvision.models.{name}")
