"""Model registry; importing this package registers every built-in model."""

from . import minixception, scratch, transfer, vggnet  # noqa: F401  (importing registers the models)
from .registry import (
    BuiltModel,
    ModelInfo,
    check_image_size,
    create_model,
    list_models,
    model_info,
)

__all__ = ["BuiltModel", "ModelInfo", "check_image_size", "create_model", "list_models", "model_info"]
