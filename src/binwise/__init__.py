"""binwise: which bin does it go in? MobileNetV2 garbage classifiers, trained and served."""

__version__ = "0.1.0"

from .modelfile import ModelFile, load_model, save_model  # noqa: E402

__all__ = ["ModelFile", "load_model", "save_model", "__version__"]
