"""Load a saved `.keras` model of any registered kind, turn a trained model into the plain Keras model a
run folder keeps."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..precision import bfloat16_unavailable
from . import augment, averaging, batchnorm, dropout  # noqa: F401  (register the layers saved models may contain)


def load_saved_model(path: Path):
    """A saved model ready to predict (no optimizer state), or UserError if the file is unusable.

    Run folders may come from anyone: models load in Keras' safe mode (explicitly, whatever Keras'
    default), which refuses Lambda layers and other stored code."""
    import zipfile

    import keras

    if not Path(path).is_file():
        raise UserError(f"cannot load model: {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise UserError(f"cannot load model {path}: it is not a Keras model file (a .keras file is a zip archive); "
                        "it may be truncated or damaged")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "Lambda" in message or "safe_mode" in message:
            raise UserError(f"refused to load {path}: it contains a Lambda layer (stored Python code), which "
                            "fer-bench never runs from a run folder") from None
        raise UserError(f"cannot load model {path}: {message}") from None
    if (reason := bfloat16_unavailable()) and computes_in(model) == "bfloat16":
        raise UserError(f"cannot run {path}: it computes in bfloat16 and {reason}")
    return model


# fer_bench's faster layers and the stock Keras layer each computes the same function as at inference
STOCK_LAYERS = {"FusedBatchNormalization": "BatchNormalization", "FewBitsDropout": "Dropout",
                "FoldedBatchNormalization": "Identity"}


def inference_model(model):
    """`model` as a run folder keeps it: without its training-only augmentation layers (named aug_*),
    with stock Keras layers in place of fer_bench's (same weights, same predictions), so that
    `keras.models.load_model` opens it without fer_bench, and answering the same whatever `training` its
    caller passes: dropout is an identity and BatchNormalization frozen (Keras 3 then normalises with the
    moving statistics). Without that, a plain `model(x)` or an export that traces the model without
    `training=` inherits `training=True` from Keras' Resizing layer, and every BatchNormalization would
    use the batch's statistics."""
    import keras

    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    rest = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer) and layer not in inner]
    if len(inner) == 1 and rest and all(layer.name.startswith("aug_") for layer in rest):
        model = inner[0]
    return _rebuilt(model, _training_free(_with_stock_layers(model.get_config())))


def in_float32(model):
    """`model` computing in float32 throughout (same weights): what the bundled model ships as, so
    that every CPU runs it, with or without native bfloat16."""
    return _rebuilt(model, _with_float32_policy(model.get_config()))


def _rebuilt(model, config: dict):
    """A model from `config` with `model`'s weights, its adapted layers' state made from them as Keras
    does when it loads a file (a Normalization layer computes its mean and variance in finalize_state:
    without it, a rebuilt transfer head standardised nothing and answered one class), kept as numpy
    constants: a traced graph then holds them, where tensors would be captured inputs, which tf2onnx's
    ONNX export asked for as missing inputs."""
    import keras
    import numpy as np

    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    for layer in rebuilt._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()
            layer.mean, layer.variance = np.asarray(layer.mean), np.asarray(layer.variance)
    return rebuilt


def _each_object(config, change):
    """A serialized Keras config with `change` applied to every object (dict) in it, innermost first."""
    if isinstance(config, list):
        return [_each_object(item, change) for item in config]
    if not isinstance(config, dict):
        return config
    return change({key: _each_object(value, change) for key, value in config.items()})


def _with_float32_policy(config):
    """A serialized Keras config with every layer's mixed dtype policy (mixed_bfloat16, ...) as float32."""
    def change(item: dict) -> dict:
        if item.get("class_name") == "DTypePolicy" and str(item.get("config", {}).get("name", "")).startswith("mixed_"):
            item["config"] = {**item["config"], "name": "float32"}
        return item

    return _each_object(config, change)


def _with_stock_layers(config):
    """A serialized Keras config with every fer_bench layer of STOCK_LAYERS named as its stock layer."""
    def change(item: dict) -> dict:
        if item.get("class_name") in STOCK_LAYERS and str(item.get("registered_name", "")).startswith("fer_bench>"):
            stock = STOCK_LAYERS[item["class_name"]]
            item.update(module="keras.layers", class_name=stock, registered_name=None)
            if stock == "Identity":  # it takes its input alone, not the BatchNormalization's call arguments
                for node in item.get("inbound_nodes", []):
                    for argument in ("mask", "training"):
                        node.get("kwargs", {}).pop(argument, None)
        return item

    return _each_object(config, change)


def _training_free(config):
    """A serialized Keras config whose layers answer the same in training and inference: Dropout as
    Identity, BatchNormalization not trainable."""
    def change(item: dict) -> dict:
        if item.get("class_name") == "Dropout" and item.get("module") == "keras.layers":
            item.update(class_name="Identity", config={"name": item["config"]["name"], "trainable": False,
                                                        "dtype": item["config"].get("dtype")})
            for node in item.get("inbound_nodes", []):
                node.get("kwargs", {}).pop("training", None)
        elif item.get("class_name") == "BatchNormalization" and item.get("module") == "keras.layers":
            item["config"] = {**item["config"], "trainable": False}
        return item

    return _each_object(config, change)


def computes_in(model) -> str:
    """The half precision some layer of `model` computes in (bfloat16 or float16), else float32."""
    def dtypes(layer):
        return {layer.compute_dtype}.union(*map(dtypes, getattr(layer, "layers", ())))

    return next((half for half in ("bfloat16", "float16") if half in dtypes(model)), "float32")
