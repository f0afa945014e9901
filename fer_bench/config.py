"""The run config and the training recipes it draws its defaults from.

A recipe is a named set of training values (`seed`: the student report's 10 epochs of plain SGD;
`strong`: a modern from-scratch recipe). Every recipe value is also a run option: an option left
unset takes the recipe's value, an option given overrides it, and the resolved config, with every
value filled in, is what `config.json` records and what the run id hashes.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .data.classes import parse_classes
from .errors import UserError

AUGMENTATIONS = ("flip", "shift", "rotation", "zoom", "brightness", "contrast", "gamma", "blur", "jpeg", "erasing")
OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw", "rmsprop")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
TTA_MODES = ("none", "flip", "crops")

RECIPES: dict[str, dict] = {
    # The seed report: batch 32, 10 epochs, Keras' default SGD (lr 0.01, no momentum), nothing else.
    "seed": dict(epochs=10, batch_size=32, optimizer="sgd", learning_rate=0.01, momentum=0.0, weight_decay=0.0,
                 label_smoothing=0.0, warmup_epochs=0, schedule="constant", patience=0, ema=0.0, augment="none",
                 precision="float32", tta="none"),
    # Modern from-scratch training, values chosen on a 10 % validation split of FER2013 train:
    # on-the-fly augmentation, AdamW with decoupled weight decay, linear warm-up then cosine decay,
    # label smoothing, early stopping on validation loss, flip test-time augmentation.
    "strong": dict(epochs=40, batch_size=64, optimizer="adamw", learning_rate=2e-3, momentum=0.9, weight_decay=0.05,
                   label_smoothing=0.1, warmup_epochs=2, schedule="cosine", patience=10, ema=0.0,
                   augment="flip,shift,rotation,zoom,erasing", precision="auto", tta="flip"),
}


IDENTITY = "identity"  # part of what the run is: hashed into the run id
EVALUATION = "evaluation"  # how a finished run is scored: not part of the run id
MACHINE = "machine"  # how this machine carries the run out: not part of the run id
DATA = "data"  # where the data lives: the run id counts the data by its fingerprint instead
RECORD = "record"  # filled in by resolve() for this machine and recorded; not a run option


_NO_NEUTRAL = object()


def option(default=None, help: str = "", role: str = IDENTITY, flags: tuple[str, ...] = (), neutral=_NO_NEUTRAL):
    """A RunConfig field: its default, its `fer-bench run` help, its role in the run id, extra flag names.
    An option added after runs already existed names its `neutral` value (the behaviour before it):
    at that value it is left out of the run id, so those runs keep their ids."""
    return field(default=default, metadata={"help": help, "role": role, "flags": flags, "neutral": neutral})


@dataclass
class RunConfig:
    """Everything that defines a run; every field but RECORD ones is a `fer-bench run` option.

    Fields left None take their value from the recipe (training values) or the model (size, width).
    Each field's role says whether it is part of the run id (see `identity`).
    """

    model: str = option("scratch", "Registered model name (see `fer-bench models`).")
    data: str | None = option(None, "Dataset folder or fer2013.csv; default: embedded synthetic faces.", DATA)
    classes: str = option("happy,sad", "'all' or a comma list, e.g. happy,sad.")
    also_train: str | None = option(None, "Also train on these data sets' training parts: a comma list of PATH or "
                                    "PATH:WEIGHT (its images are repeated WEIGHT times in the fit set, a fraction "
                                    "as a seeded share of them; --data's count once); classes matched by name; each one's own test "
                                    "part is scored separately (evaluations/). Counted in the run id by content.",
                                    DATA, neutral=None)
    image_size: int | None = option(None, "Model input size; default: the model's own.")
    width: float | None = option(None, "Channel multiplier of models that have one (vggnet; mobilenet's alpha, "
                                 "read off its weights file when one is given).")
    recipe: str = option("seed", "Training recipe: seed (the report's 10 epochs of plain SGD) or strong; "
                         "every option below left unset takes the recipe's value.")
    epochs: int | None = option(None)
    batch_size: int | None = option(None)
    optimizer: str | None = option(None, "sgd (no momentum in the seed recipe), nesterov, adam, adamw, rmsprop.")
    learning_rate: float | None = option(None, flags=("--lr",))
    momentum: float | None = option(None, "Momentum of sgd / nesterov.")
    weight_decay: float | None = option(None, "Decoupled weight decay.")
    label_smoothing: float | None = option(None)
    warmup_epochs: int | None = option(None, "Linear learning-rate warm-up epochs.")
    schedule: str | None = option(None, "constant or cosine (after the warm-up).")
    patience: int | None = option(None, "Early stopping on validation loss after this many epochs without "
                                  "improvement; 0 = off.")
    ema: float | None = option(None, "Weight averaging: momentum of an exponential moving average of the weights, "
                               "updated every step (e.g. 0.999); validation, the checkpoint and evaluation use the "
                               "averaged weights. 0 = off.", neutral=0.0)
    teacher: str | None = option(None, "Distillation: a complete run (a folder, or a run id in --results; an ensemble "
                                 "too) validated on the same images; counted in the run id by its model and temperature.",
                                 neutral=None)
    distill: float = option(0.0, "Distillation: weight of the teacher's calibrated probabilities in the training "
                            "targets (the rest is the labels); 0 = off.", neutral=0.0)
    targets: str = option("labels", "Training targets: labels (FER+: majority), or from a crowd's votes (FER+ data): "
                          "votes (cross-entropy on the vote distribution), probability (a label drawn from it every "
                          "epoch), multilabel (every class with 30 % of the votes accepted).", neutral="labels")
    augment: str | None = option(None, "none or a comma list of flip, shift, rotation, zoom, brightness, contrast, "
                                 "gamma, blur, jpeg, erasing.")
    precision: str | None = option(None, "auto (bfloat16 where the hardware has it), float32, bfloat16, float16; "
                                   "'auto' stays 'auto' in the run id.")
    tta: str | None = option(None, "Test-time augmentation reported beside the plain numbers: none, flip or crops "
                             "(scoring only: not part of the run id).", EVALUATION)
    seed: int = option(42)
    val_split: str = option("auto", "Where the checkpoint is picked: 'train' (stratified fraction), 'given' (the "
                            "data's own validation split), 'test' (the seed's protocol); 'auto': given if the data "
                            "has one, else train.")
    val_fraction: float | None = option(0.1)
    val_seed: int | None = option(None, "Seed of the validation split carved from train (--val-split train); default: "
                                  "--seed. Runs of different --seed with one --val-seed are validated on the same "
                                  "images (an ensemble's members, a teacher and its student).", neutral=None)
    weights: str | None = option(None, "Transfer models: their pretrained weights (default: imagenet; ms1m for "
                                 "mobilefacenet, shipped), none (random initialisation), or a weights file.")
    variant: str = option("frozen", "Transfer models: frozen (head on the frozen base), finetune (then the base's "
                          "top blocks at --finetune-learning-rate) or full (the whole network end to end under "
                          "the recipe, from its weights: ImageNet, or none for random initialisation).")
    framing: str = option("fer", "Transfer models: the crop the base sees: fer (FER2013's tight framing, as the data "
                          "comes) or arcface (zoomed out and lowered toward the 5-point ArcFace template that face-"
                          "recognition bases were trained on).", neutral="fer")
    finetune_epochs: int | None = option(5)
    finetune_learning_rate: float | None = option(1e-4)
    class_weight: str = option("none", "none or balanced.")
    test_usage: str = option("PrivateTest", "fer2013.csv: which Usage is the test set.")
    dedupe: bool = option(False, "Drop test images that also occur in train.")
    devices: str = option("1", "Train on N local GPUs (or 'all') with MirroredStrategy; --batch-size is the global "
                          "batch. Without GPUs the CPU is split into N logical devices.", MACHINE)
    tensorboard: bool = option(False, "Also write TensorBoard logs into the run folder.", MACHINE)
    strict: bool = option(False, "Unreadable image files are an error instead of skipped.", MACHINE)
    allow_precision_change: bool = option(False, "Resume an interrupted run even where this machine computes in "
                                          "another precision than the run started in (recorded in resumes.json).",
                                          MACHINE)
    precision_used: str | None = option(None, "What 'auto' precision resolved to on the machine that trained.",
                                        RECORD)

    def validation_seed(self) -> int:
        """The seed of the validation split carved from train: --val-seed, else --seed."""
        return self.seed if self.val_seed is None else self.val_seed

    def identity(self) -> dict:
        """The values that make this run what it is (IDENTITY fields), numbers normalised by type."""
        return {f.name: _normalised(getattr(self, f.name), _OPTION_TYPES[f.name]) for f in fields(self)
                if f.metadata["role"] == IDENTITY and getattr(self, f.name) != f.metadata["neutral"]}

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Build from a mapping such as an experiment TOML row, refusing unknown keys (naming the nearest)."""
        import difflib

        known = [f.name for f in fields(cls) if f.metadata["role"] != RECORD]
        for key in sorted(set(values) - set(known)):
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {', '.join(sorted(known))}"
            raise UserError(f"unknown run option {key!r}{hint}")
        for key, value in values.items():
            if value is not None and not _has_type(value, _OPTION_TYPES[key]):
                raise UserError(f"run option {key!r} must be {_TYPE_WORDS[_OPTION_TYPES[key]]}, got {value!r}")
        return cls(**values)


def compared_options() -> tuple[str, ...]:
    """The options whose values say what a run is (IDENTITY and DATA roles): what `compare` may show as
    columns; machine, evaluation and recorded fields never are."""
    return tuple(f.name for f in fields(RunConfig) if f.metadata["role"] in (IDENTITY, DATA))


def neutral_values() -> dict:
    """Options added after runs existed, with the value that means "as before the option": what a
    config.json written before them holds implicitly."""
    return {f.name: f.metadata["neutral"] for f in fields(RunConfig) if f.metadata["neutral"] is not _NO_NEUTRAL}


_TYPE_WORDS = {str: "a string", int: "an integer", (int, float): "a number", bool: "true or false"}
def _option_type(annotation):
    """The type a RunConfig field accepts from TOML (None aside); a float field also takes an integer."""
    (kind,) = [t for t in typing.get_args(annotation) or (annotation,) if t is not type(None)]
    return (int, float) if kind is float else kind


_OPTION_TYPES = {name: _option_type(hint) for name, hint in typing.get_type_hints(RunConfig).items()}


def _normalised(value, expected):
    """A float field's integer value as a float (TOML `1` and `--lr 1.0` are one run)."""
    return float(value) if expected == (int, float) and value is not None else value


def _has_type(value, expected) -> bool:
    """isinstance, except that true/false count only as booleans (Python's bool is an int)."""
    return isinstance(value, bool) == (expected is bool) and isinstance(value, expected)


@dataclass(frozen=True)
class Bounds:
    """The numbers an option accepts: finite, from `low` to `high`, each end included unless said."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    why: str = ""  # said when the value is refused, e.g. what the limit protects

    def check(self, key: str, value) -> None:
        if value is None:
            return
        low_ok = value > self.low if self.low_open else value >= self.low
        high_ok = value < self.high if self.high_open else value <= self.high
        if not (math.isfinite(value) and low_ok and high_ok):
            span = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            raise UserError(f"--{key.replace('_', '-')} must be a number in {span}, got {value!r}"
                            + (f" ({self.why})" if self.why else ""))


MAX_EPOCHS = 10_000
SEEDS = Bounds(0, 2**32 - 1, why="NumPy's seeds")
# What every numeric run option accepts, in one table (scikit-learn's parameter constraints, as data);
# image_size's lower end is the model's own (registry.check_image_size)
BOUNDS = {
    "width": Bounds(0, 4, low_open=True),
    "epochs": Bounds(1, MAX_EPOCHS),
    "batch_size": Bounds(1, 8192),
    "learning_rate": Bounds(0, 10, low_open=True),
    "finetune_learning_rate": Bounds(0, 10, low_open=True),
    "momentum": Bounds(0, 1, high_open=True),
    "weight_decay": Bounds(0, 1),
    "label_smoothing": Bounds(0, 1, high_open=True, why="1 would make every target uniform"),
    "warmup_epochs": Bounds(0, MAX_EPOCHS),
    "patience": Bounds(0, MAX_EPOCHS),
    "ema": Bounds(0, 1, high_open=True),
    "distill": Bounds(0, 1),
    "finetune_epochs": Bounds(1, MAX_EPOCHS),
    "seed": SEEDS,
    "val_seed": SEEDS,
    "val_fraction": Bounds(0, 1, low_open=True, high_open=True),
}
BOUNDS_OF_SIZE = Bounds(1, 1024, why="a batch of larger inputs does not fit in memory on a CPU machine; FER2013 faces "
                                    "are 48 px and ImageNet bases were trained at 224-299 px")


def _check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise UserError(f"--{key.replace('_', '-')} must be one of {', '.join(allowed)}, got {value!r}")


def _resolve_augment(value: str) -> str:
    if value in ("none", ""):
        return "none"
    ops = [op.strip() for op in value.split(",") if op.strip()]
    for op in ops:
        _check_choice("augment", op, AUGMENTATIONS + ("none",))
    return ",".join(op for op in AUGMENTATIONS if op in ops)  # canonical order: the same set, the same id


def _resolve_devices(spec: str | int) -> int:
    """'all' → every local GPU (at least 1); a number ≥ 1 → itself."""
    if str(spec) == "all":
        import tensorflow as tf

        return max(1, len(tf.config.list_physical_devices("GPU")))
    try:
        count = int(spec)
    except ValueError:
        raise UserError(f"--devices must be a number or 'all', got {spec!r}") from None
    if count < 1:
        raise UserError("--devices must be at least 1")
    return count


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill recipe and model defaults and check every option value; returns a new config."""
    from .models import check_image_size, model_info
    from .precision import resolve_precision

    info = model_info(cfg.model)
    _check_choice("recipe", cfg.recipe, tuple(RECIPES))
    values = asdict(cfg)
    for key, default in RECIPES[cfg.recipe].items():
        if values[key] is None:
            values[key] = default
    values["image_size"] = info.default_size if cfg.image_size is None else cfg.image_size
    BOUNDS_OF_SIZE.check("image_size", values["image_size"])
    check_image_size(info, values["image_size"])
    if info.default_width is None:
        if cfg.width is not None:
            raise UserError(f"{cfg.model} has no width setting (--width applies to: vggnet, mobilenet, mobilenetv2)")
    else:
        values["width"] = float(_width_of_weights(info, cfg) or cfg.width or info.default_width)
    wanted = parse_classes(cfg.classes)
    values["classes"] = "all" if wanted is None else ",".join(wanted)
    if info.transfer:
        values["weights"] = cfg.weights or info.pretrained
        if values["weights"] not in (info.pretrained, "none"):
            if not Path(values["weights"]).is_file():
                raise UserError(f"weights file not found: {values['weights']}")
            values["weights"] = str(Path(values["weights"]).resolve())
        _check_choice("variant", cfg.variant, ("frozen", "finetune", "full"))
        _check_choice("framing", cfg.framing, ("fer", "arcface"))
    else:
        if cfg.weights not in (None, "none"):
            raise UserError(f"{cfg.model} is trained from scratch and takes no --weights")
        if cfg.variant != "frozen":
            raise UserError(f"--variant applies to transfer models only, not {cfg.model}")
        if cfg.framing != "fer":
            raise UserError(f"--framing applies to transfer models only, not {cfg.model}")
        values["weights"] = "none"
    choices = {"val_split": ("auto", "train", "given", "test"), "class_weight": ("none", "balanced"),
               "targets": ("labels", "votes", "probability", "multilabel"),
               "optimizer": OPTIMIZERS, "schedule": ("constant", "cosine"), "precision": PRECISIONS, "tta": TTA_MODES}
    for key, allowed in choices.items():
        _check_choice(key, values[key], allowed)
    values["augment"] = _resolve_augment(values["augment"])
    values["precision_used"] = resolve_precision(values["precision"])
    if (values["distill"] > 0) != (cfg.teacher is not None):
        raise UserError("--distill WEIGHT and --teacher RUN go together")
    for key, bounds in BOUNDS.items():
        bounds.check(key, values[key])
    if cfg.data is not None:
        values["data"] = str(Path(cfg.data).resolve())
    if cfg.also_train is not None:
        from .data.sources import parse_also_train

        values["also_train"] = ",".join(f"{path}:{weight:g}" for path, weight in parse_also_train(cfg.also_train))
    values.update(_inapplicable(values))
    values["devices"] = str(_resolve_devices(cfg.devices))
    values = {key: _normalised(value, _OPTION_TYPES[key]) for key, value in values.items()}
    return RunConfig(**values)


def _inapplicable(values: dict) -> dict:
    """Options that change nothing in this run, set to None so that they leave its identity: momentum
    outside sgd/nesterov, the finetune stage's options outside --variant finetune."""
    dropped = {}
    if values["optimizer"] not in ("sgd", "nesterov"):
        dropped["momentum"] = None
    if values["variant"] != "finetune":
        dropped.update(finetune_epochs=None, finetune_learning_rate=None)
    return dropped


def _width_of_weights(info, cfg: RunConfig) -> float | None:
    """A transfer base's width as its weights file says (MobileNet), checked against --width."""
    from .models.transfer import has_width, width_of_weights_file

    if not (info.transfer and has_width(info.name) and cfg.weights not in (None, "none", info.pretrained)):
        return None
    if not Path(cfg.weights).is_file():
        raise UserError(f"weights file not found: {cfg.weights}")
    width = width_of_weights_file(info.name, Path(cfg.weights))
    if cfg.width is not None and float(cfg.width) != width:
        raise UserError(f"--width {cfg.width} does not match the weights file, whose width is {width}")
    return width


def resolve_val_split(cfg: RunConfig, has_validation: bool) -> RunConfig:
    """Turn val_split 'auto' into 'given' or 'train' for this data (val_fraction None unless 'train');
    refuse 'given' without one."""
    if cfg.val_split == "auto":
        cfg = replace(cfg, val_split="given" if has_validation else "train")
    if cfg.val_split == "given" and not has_validation:
        raise UserError("--val-split given needs data with its own validation split (e.g. fer2013.csv PublicTest)")
    if cfg.val_seed is not None and cfg.val_split != "train":
        raise UserError(f"--val-seed applies to a validation split carved from train, not to --val-split {cfg.val_split}")
    return cfg if cfg.val_split == "train" else replace(cfg, val_fraction=None)  # a fraction of nothing


def validation_images(config: dict) -> dict:
    """What decides which images a run (its config.json) was validated on: the kind of split and, for
    one carved from train, its fraction and seed. Runs with equal values were validated on the same images."""
    if config["val_split"] != "train":
        return {"val_split": config["val_split"]}
    seed = config.get("val_seed")
    return {"val_split": "train", "val_fraction": config["val_fraction"],
            "validation seed": config["seed"] if seed is None else seed}


def validation_difference(theirs: dict, ours: dict) -> str | None:
    """How two runs' (config.json) validation images differ, e.g. 'validation seed 4 vs 3'; None if they are the same."""
    a, b = validation_images(theirs), validation_images(ours)
    key = next((k for k in b if a.get(k) != b[k]), None)
    return None if key is None else f"{key} {a.get(key)} vs {b[key]}"


def class_weights(cfg: RunConfig, labels: np.ndarray) -> dict[int, float] | None:
    """sklearn's 'balanced' class weights when asked for, else None."""
    if cfg.class_weight != "balanced":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.unique(labels)
    return {int(c): float(w) for c, w in zip(classes, compute_class_weight("balanced", classes=classes, y=labels))}
