"""MobileFaceNet, the face-identity base: our Keras network with the shipped state dict answers as the
authors' ONNX export does, the registered model's preprocessing and folded BatchNorm keep the features,
the shipped file is the published one, a wrong file is one clear error; MobileNetV2 reads its width
off its weights file and loads the shared ImageNet file as Keras' own MobileNetV2 does."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import script_report
from fer_bench.config import RunConfig, resolve
from fer_bench.errors import UserError
from fer_bench.models import mobilefacenet, model_info, transfer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights"
ONNX_FILE = SHARED / "mobilefacenet" / "MobileFaceNet.onnx"
V2_FILE = SHARED / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"

# In a subprocess (TensorFlow kernels): the 128-d embedding of our network against onnxruntime on the
# authors' export, on the same normalised RGB inputs (random and real-looking faces).
SAME_EMBEDDING = """
import json, sys
import numpy as np, onnxruntime
from fer_bench.models.mobilefacenet import SHIPPED_WEIGHTS, load_state_dict, mobilefacenet
network = mobilefacenet((112, 112, 3), embedding=True)
load_state_dict(network, SHIPPED_WEIGHTS)
x = np.random.default_rng(0).normal(size=(6, 112, 112, 3)).astype("float32")
ours = network.predict(x, verbose=0)
session = onnxruntime.InferenceSession(sys.argv[1])
theirs = np.concatenate([session.run(None, {"input0": one[None].transpose(0, 3, 1, 2)})[0] for one in x])
print(json.dumps({"max_difference": float(np.abs(ours - theirs).max()), "scale": float(np.abs(theirs).max())}))
"""

# The registered model (gray → RGB, "torch" preprocessing, BatchNorm folded into the convolutions) against
# the plain network on the same faces standardised by hand: the pooled conv2 features.
SAME_FEATURES = """
import json
import numpy as np
from fer_bench.data.dataset import as_model_input
from fer_bench.data.synthetic import synthetic_split
from fer_bench.models import create_model
from fer_bench.models.mobilefacenet import SHIPPED_WEIGHTS, load_state_dict, mobilefacenet
faces = synthetic_split(8, seed=3, classes=("happy", "sad")).images
ours = create_model("mobilefacenet", 2, 112, weights=str(SHIPPED_WEIGHTS)).extractor.predict(as_model_input(faces), verbose=0)
network = mobilefacenet((112, 112, 3))
load_state_dict(network, SHIPPED_WEIGHTS)
import keras
rgb = np.repeat(faces[..., None].astype("float32"), 3, axis=-1)
x = keras.ops.image.resize(rgb, (112, 112), interpolation="bilinear") / 255.0
x = (x - np.array([0.485, 0.456, 0.406], "float32")) / np.array([0.229, 0.224, 0.225], "float32")
theirs = keras.ops.convert_to_numpy(keras.ops.mean(network(x, training=False), axis=(1, 2)))
print(json.dumps({"max_difference": float(np.abs(ours - theirs).max()), "scale": float(np.abs(theirs).max())}))
"""


# The ArcFace framing: what the base sees is FER2013's crop resized to 98 of 112 px, preprocessed, with a
# border of the base's mean colour (zero) 7 px on each side, 14 px on top and none below.
FRAMED = """
import json
import keras, numpy as np
from fer_bench.data.dataset import as_model_input
from fer_bench.data.synthetic import synthetic_split
from fer_bench.models import create_model
faces = as_model_input(synthetic_split(4, seed=3, classes=("happy", "sad")).images)
seen = {}
for framing in ("fer", "arcface"):
    built = create_model("mobilefacenet", 2, 112, weights="none", framing=framing)
    before_base = built.extractor.layers[built.extractor.layers.index(built.base) - 1]
    seen[framing] = keras.Model(built.extractor.input, before_base.output).predict(faces, verbose=0)
framed, plain = seen["arcface"], seen["fer"]
inside = framed[:, 14:, 7:105]
print(json.dumps({"shapes": [list(framed.shape), list(plain.shape)],
                  "border": float(np.abs(np.concatenate([framed[:, :14].ravel(), framed[:, :, :7].ravel(),
                                                         framed[:, :, 105:].ravel()])).max()),
                  "inside_spread": float(inside.std()), "inside_mean_gap": float(abs(inside.mean() - plain.mean()))}))
"""


def test_arcface_framing_shrinks_the_crop_and_lowers_it_in_a_mean_colour_frame():
    report = script_report(FRAMED)
    assert report["shapes"] == [[8, 112, 112, 3], [8, 112, 112, 3]]
    assert report["border"] == 0.0 and report["inside_spread"] > 0.1 and report["inside_mean_gap"] < 0.1, report
    assert transfer.arcface_border(112) == 7 and transfer.arcface_border(64) == 4


def test_framing_is_a_transfer_option_recorded_only_when_it_is_not_fer():
    assert "framing" not in resolve(RunConfig(model="mobilefacenet")).identity()
    assert resolve(RunConfig(model="mobilefacenet", framing="arcface")).identity()["framing"] == "arcface"
    with pytest.raises(UserError, match="--framing applies to transfer models only"):
        resolve(RunConfig(model="scratch", framing="arcface"))
    with pytest.raises(UserError, match="framing"):
        resolve(RunConfig(model="mobilefacenet", framing="wide"))


@pytest.mark.skipif(not ONNX_FILE.is_file(), reason="../shared/weights/mobilefacenet is absent")
def test_keras_port_equals_the_authors_onnx_export():
    pytest.importorskip("onnxruntime")
    report = script_report(SAME_EMBEDDING, ONNX_FILE)
    assert report["scale"] > 0.5 and report["max_difference"] < 1e-4, report


def test_registered_model_features_equal_the_network_on_standardised_faces():
    report = script_report(SAME_FEATURES)
    assert report["scale"] > 0.1 and report["max_difference"] < 1e-3 * max(1.0, report["scale"]), report


def test_shipped_weights_are_the_published_file_with_licence_and_provenance():
    provenance = (mobilefacenet.SHIPPED_WEIGHTS.parent / "PROVENANCE.md").read_text()
    digest = hashlib.sha256(mobilefacenet.SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert re.search(r"sha256 `([0-9a-f]{64})`", provenance).group(1) == digest
    assert "withdrew MS-Celeb-1M" in provenance
    assert "Apache License" in (mobilefacenet.SHIPPED_WEIGHTS.parent / "LICENSE-mobilefacenet").read_text()
    assert resolve(RunConfig(model="mobilefacenet")).weights == "ms1m"  # the default, always there
    assert transfer.cached_pretrained_file(model_info("mobilefacenet")) == mobilefacenet.SHIPPED_WEIGHTS


def test_a_file_that_is_not_its_state_dict_is_one_clear_error(tmp_path):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{"conv1.0.weight": np.zeros((8, 3, 3, 3), "float32")})
    network = mobilefacenet.mobilefacenet((64, 64, 3))
    with pytest.raises(UserError, match="is not a MobileFaceNet state dict"):
        mobilefacenet.load_state_dict(network, wrong)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read MobileFaceNet weights"):
        mobilefacenet.load_state_dict(network, garbage)


@pytest.mark.skipif(not V2_FILE.is_file(), reason="../shared/weights MobileNetV2 file is absent")
def test_mobilenetv2_width_from_its_file_and_keras_names():
    assert resolve(RunConfig(model="mobilenetv2", weights=str(V2_FILE))).width == 1.0
    with pytest.raises(UserError, match="whose width is 1.0"):
        resolve(RunConfig(model="mobilenetv2", weights=str(V2_FILE), width=0.5))
    names = transfer.imagenet_file_names(model_info("mobilenetv2"), 1.0, 96)
    assert names == ["mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5", V2_FILE.name]
    with pytest.raises(UserError, match="is not a mobilenetv2 weights file"):
        transfer.width_of_weights_file("mobilenetv2", mobilefacenet.SHIPPED_WEIGHTS)


# A frozen run end to end (a head on cached MobileFaceNet features), in its own process: it learns, and
# the model as the run keeps it answers as its training did, in memory (test-time augmentation is
# scored there) and from the saved file. The in-memory copy once skipped the Normalization layer's
# finalize_state: the head standardised nothing and the flip-TTA accuracy was chance (0.50 beside 0.965).
FROZEN_RUN = """
import json, sys
import numpy as np
from fer_bench.config import RunConfig
from fer_bench.runs.run import execute
run_dir = execute(RunConfig(model="mobilefacenet", image_size=64, epochs=3, recipe="strong"), output=sys.argv[1])
metrics = json.loads((run_dir / "metrics.json").read_text())
print(json.dumps({"accuracy": metrics["accuracy"], "tta": metrics["tta"]["accuracy"]}))
"""


def test_a_frozen_run_learns_and_its_kept_model_answers_as_trained(tmp_path):
    report = script_report(FROZEN_RUN, tmp_path)
    assert report["accuracy"] > 0.85 and abs(report["tta"] - report["accuracy"]) < 0.06, report
