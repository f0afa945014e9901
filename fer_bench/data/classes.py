"""FER2013's expression classes, the aliases people use for them, and `--classes` parsing."""

from __future__ import annotations

from ..errors import UserError

# FER2013's seven expressions in the alphabetical order Keras' directory readers use.
FER_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# Kaggle's fer2013.csv numbers them differently: 0..6 = angry, disgust, fear, happy, sad, surprise, neutral.
FER_CSV_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

ALIASES = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "neutrality": "neutral",
}


def canonical_class(name: str) -> str:
    """Map a folder or user-given class name to its canonical lower-case form."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def parse_classes(spec: str) -> tuple[str, ...] | None:
    """Parse `--classes`: 'all' gives None (every class in the data), else a comma list in order."""
    if spec.strip().lower() == "all":
        return None
    names = [canonical_class(part) for part in spec.split(",") if part.strip()]
    if len(names) < 2:
        raise UserError(f"--classes needs at least two classes or 'all', got {spec!r}")
    if len(set(names)) != len(names):
        raise UserError(f"--classes names a class twice: {spec!r}")
    return tuple(names)


MAX_TAG = 60  # bytes of class names in a run id


def classes_tag(names: tuple[str, ...] | None) -> str:
    """Short readable form of a class selection for run ids, e.g. 'happy-sad' or 'all' ('5-classes' where
    the names together would be longer than MAX_TAG: a run id is a folder name, at most 255 bytes)."""
    if names is None:
        return "all"
    tag = "-".join(names)
    return tag if len(tag.encode()) <= MAX_TAG else f"{len(names)}-classes"

