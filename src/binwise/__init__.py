"""binwise: which bin does it go in? MobileNetV2 garbage classifiers, trained and served."""

__version__ = "0.1.0"

__all__ = ["Classifier", "ModelFile", "load_model", "save_model", "__version__"]

# Imported on first use, so ``import binwise`` stays torch-free: the ONNX inference path
# (binwise.inference.classifier with an .onnx model) must run where torch is not installed.
_LAZY = {"ModelFile": "model.file", "load_model": "model.file", "save_model": "model.file",
         "Classifier": "inference.classifier"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
