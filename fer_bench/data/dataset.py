"""Read a FER dataset once into 48x48 grayscale uint8 arrays, cache them, and shape them for a run.

Layouts understood (one sub-folder per class in each split):
    ROOT/train + ROOT/test          (Kaggle "msambare/fer2013")
    ROOT/train + ROOT/validation    (Kaggle "face expression recognition"), also under ROOT/images/
The folder's test/validation split is the test set that runs report.
"""

from __future__ import annotations

import hashlib
import stat
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import UserError
from ..files import save_npz
from .classes import canonical_class

NATIVE_SIZE = 48
TEST_SPLIT_NAMES = ("test", "validation", "val", "valid")
_DECODE_VERSION = "3"  # bump when decoding changes, so old caches are not reused
log = logging.getLogger(__name__)


@dataclass
class Split:
    """Images (n, 48, 48) uint8, integer labels into the dataset's class names, one name per image,
    and, where a crowd labelled them (FER+), each image's vote counts per class (n, classes)."""

    images: np.ndarray
    labels: np.ndarray
    files: list[str]
    votes: np.ndarray | None = None
    weights: np.ndarray | None = None  # sampling weight per image when several sources train together

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Split":
        votes, weights = (None if part is None else part[index] for part in (self.votes, self.weights))
        return Split(self.images[index], self.labels[index], [self.files[i] for i in index], votes, weights)


@dataclass
class Dataset:
    """Train and test splits (and a validation split if the source defines one) over `class_names`.

    `skipped` names what could not be read (files, CSV rows); `formats` counts the image modes and
    sizes found before conversion; `dropped_duplicates` counts test images removed by dedupe;
    `training_sources` names the data sets whose training images joined the train split.
    """

    source: str
    layout: str
    class_names: tuple[str, ...]
    train: Split
    test: Split
    validation: Split | None = None
    skipped: list[str] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)
    dropped_duplicates: int = 0
    training_sources: list[dict] = field(default_factory=list)

    def splits(self) -> dict[str, Split]:
        """The splits present, by name."""
        named = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: split for name, split in named.items() if split is not None}

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class."""
        return {
            name: {c: int((split.labels == i).sum()) for i, c in enumerate(self.class_names)}
            for name, split in self.splits().items()
        }

    def fingerprint(self) -> dict:
        """Content hashes of the arrays, so runs on the same pixels and labels can be matched."""

        def digest(split: Split) -> str:
            h = hashlib.sha256()
            h.update(np.ascontiguousarray(split.images).tobytes())
            h.update(np.asarray(split.labels, dtype=np.int64).tobytes())
            h.update("\n".join(self.class_names).encode())
            if split.weights is not None:
                h.update(np.asarray(split.weights, dtype=np.float64).tobytes())
            return h.hexdigest()[:16]

        result = {
            "source": self.source,
            "layout": self.layout,
            "classes": list(self.class_names),
            "counts": self.counts(),
            **{f"{name}_sha256": digest(split) for name, split in self.splits().items()},
            "skipped": len(self.skipped),
            "dropped_test_duplicates_of_train": self.dropped_duplicates,
            **({"also_trained_on": self.training_sources} if self.training_sources else {}),
        }
        return result


def as_model_input(images: np.ndarray) -> np.ndarray:
    """(n, 48, 48) uint8 pixels → (n, 48, 48, 1) uint8 raw 0-255, every model's input: a view, no copy.
    The model's float32 Input converts each batch, so no float32 copy of a whole split is ever made
    (a quarter of the memory; the same numbers)."""
    return images[..., None]


def cache_dir() -> Path:
    """Where decoded arrays and frozen features are cached ($FER_BENCH_CACHE, else ~/.cache/fer_bench)."""
    return Path(os.environ.get("FER_BENCH_CACHE", Path.home() / ".cache" / "fer_bench"))


MAX_PIXELS = 40_000_000  # larger images (decompression bombs among them) are refused before decoding


def check_pixel_count(image: Image.Image) -> None:
    """Refuse an opened (not yet decoded) image with more than MAX_PIXELS pixels (PIL's DecompressionBombError)."""
    if image.width * image.height > MAX_PIXELS:
        raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels is more than the {MAX_PIXELS:,} allowed")


def printable_name(name: str) -> str:
    """A file name as text that can be written anywhere (undecodable bytes become U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit grayscale scaled to 8 bits (PIL's convert would clip it to white); others unchanged."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
    return Image.fromarray(np.clip(values / top * 255, 0, 255).astype(np.uint8))


def to_native(image: Image.Image) -> np.ndarray:
    """Any PIL image (mode, size, bit depth) → 48x48 grayscale uint8, the one conversion used everywhere."""
    gray = to_8bit(image).convert("L")
    if gray.size != (NATIVE_SIZE, NATIVE_SIZE):
        gray = gray.resize((NATIVE_SIZE, NATIVE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def find_split_dirs(root: Path) -> tuple[Path, Path, Path | None, str]:
    """Locate the train, test and (if there is one beside test/) validation split folders of a dataset
    folder, or raise UserError. A validation/ folder without a test/ one (Kaggle's layout) is the test set,
    and the layout says so."""
    if not root.exists():
        raise UserError(f"data path does not exist: {root}")
    if not root.is_dir():
        raise UserError(f"data path is not a folder: {root}")
    for base in (root, root / "images"):
        if not (base / "train").is_dir():
            continue
        prefix = "images/" if base != root else ""
        found = [name for name in TEST_SPLIT_NAMES if (base / name).is_dir()]
        if "test" in found and len(found) > 1:  # e.g. what `fer-bench data export` writes from fer2013.csv
            return base / "train", base / "test", base / found[1], f"{prefix}train+test+{found[1]}"
        if found:
            name = found[0]
            note = "" if name == "test" else f" ({name}/ is the test split: there is no test/ folder)"
            return base / "train", base / name, None, f"{prefix}train+{name}{note}"
    raise UserError(
        f"no dataset layout found in {root}: expected train/ and test/ (or validation/) "
        "folders with one sub-folder per class, optionally under images/"
    )


def list_class_files(split_dir: Path) -> list[tuple[str, Path]]:
    """(canonical class, file) for every non-hidden file in each class sub-folder."""
    found = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if printable_name(class_dir.name) != class_dir.name:  # a class name is written into every record
            raise UserError(f"class folder {printable_name(str(class_dir))!r}: its name is not UTF-8 text; rename it")
        label = canonical_class(class_dir.name)
        for f in sorted(class_dir.iterdir()):
            # broken or looping symlinks are listed too, so decoding counts them as unreadable
            if (f.is_file() or f.is_symlink()) and not f.name.startswith("."):
                found.append((label, f))
    return found


def file_list_key(root: Path, files: list[tuple[str, Path]], extra: str = "") -> str:
    """Cache key of a file list: every file's class, path, size and modification time (and `extra`)."""
    h = hashlib.sha256((_DECODE_VERSION + extra).encode())
    for label, f in files:
        try:
            st = f.stat()
        except OSError:  # a broken or looping symlink: its own entry
            st = f.lstat()
        h.update(label.encode() + b"|" + os.fsencode(f.relative_to(root)) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def make_split(images: list[np.ndarray], labels: list[int], files: list[str]) -> Split:
    """A Split from per-image lists (an empty list gives an empty split)."""
    arr = np.stack(images) if images else np.zeros((0, NATIVE_SIZE, NATIVE_SIZE), np.uint8)
    return Split(arr, np.asarray(labels, dtype=np.int64), files)


def decode_files(root: Path, files: list[tuple[str, Path]], class_names: tuple[str, ...], formats: Counter):
    """Decode (class, file) pairs into a Split; returns it and the files that could not be read."""
    images, labels, names, skipped = [], [], [], []
    index = {c: i for i, c in enumerate(class_names)}
    for n, (label, f) in enumerate(files, start=1):
        if n % 5000 == 0:
            log.info("  decoded %d of %d", n, len(files))
        rel = printable_name(str(f.relative_to(root)))
        try:
            if not stat.S_ISREG(f.stat().st_mode):  # a pipe or device (also behind a symlink) would block
                raise ValueError("not a regular file")
            with Image.open(f) as im:
                check_pixel_count(im)
                formats[f"{im.format} {im.mode} {im.width}x{im.height}"] += 1
                images.append(to_native(ImageOps.exif_transpose(im)))  # upright, as a viewer shows it
        except Exception:  # PIL raises many types for broken files; all mean "unreadable"
            skipped.append(rel)
            continue
        labels.append(index[label])
        names.append(rel)
    return make_split(images, labels, names), skipped


def read_folder_dataset(root: Path, use_cache: bool = True) -> Dataset:
    """Read (or load from cache) every class of a folder dataset as 48x48 uint8 arrays."""
    root = Path(root)
    train_dir, test_dir, validation_dir, layout = find_split_dirs(root)
    train_files, test_files = list_class_files(train_dir), list_class_files(test_dir)
    validation_files = list_class_files(validation_dir) if validation_dir else []
    if not train_files:
        raise UserError(f"no class folders with files in {train_dir}")
    key = file_list_key(root, train_files + test_files + validation_files)
    return cached_dataset(key, use_cache,
                          lambda: _decode_folders(root, layout, train_files, test_files, validation_files))


def read_labelled_folder(root: Path) -> tuple[Split, tuple[str, ...], list[str], str]:
    """Images to score from a folder that is not a train/test data set: its test/ (or validation/)
    split, or its class sub-folders. Returns (split, class names, skipped files, layout)."""
    if not root.is_dir():
        raise UserError(f"data path does not exist or is not a folder: {root}")
    split_dir = next((root / name for name in TEST_SPLIT_NAMES if (root / name).is_dir()), root)
    files = list_class_files(split_dir)
    if not files:
        raise UserError(f"no class sub-folders with images in {split_dir}")
    class_names = tuple(sorted({c for c, _ in files}))
    split, skipped = decode_files(root, files, class_names, Counter())
    return split, class_names, skipped, "class folders" if split_dir == root else f"{split_dir.name}/ only"


def _decode_folders(root: Path, layout: str, train_files, test_files, validation_files=()) -> Dataset:
    every = train_files + test_files + list(validation_files)
    log.info("decoding %d images from %s (cached afterwards)", len(every), root)
    class_names = tuple(sorted({c for c, _ in every}))
    formats: Counter = Counter()
    train, skipped_train = decode_files(root, train_files, class_names, formats)
    test, skipped_test = decode_files(root, test_files, class_names, formats)
    validation, skipped_validation = (decode_files(root, list(validation_files), class_names, formats)
                                      if validation_files else (None, []))
    return Dataset(str(root.resolve()), layout, class_names, train, test, validation,
                   skipped=skipped_train + skipped_test + skipped_validation, formats=dict(formats))


def cached_dataset(key: str, use_cache: bool, decode) -> Dataset:
    """The dataset cached under `key`, or `decode()` it and store it (atomically) for next time."""
    cache = cache_dir() / "datasets" / f"{key}.npz"
    if use_cache and cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                splits = {s: Split(z[f"{s}_images"], z[f"{s}_labels"], list(meta["files"][s]),
                                   z[f"{s}_votes"] if f"{s}_votes" in z else None) for s in meta["files"]}
            return Dataset(meta["source"], meta["layout"], tuple(meta["class_names"]), splits["train"], splits["test"],
                           splits.get("validation"), skipped=meta["skipped"], formats=meta["formats"])
        except Exception as error:  # a cache from another version or a damaged file: decode again
            log.warning("ignoring unusable cache %s (%s)", cache, type(error).__name__)
    dataset = decode()
    splits = dataset.splits()
    meta = {
        "source": dataset.source,
        "layout": dataset.layout,
        "class_names": dataset.class_names,
        "files": {name: split.files for name, split in splits.items()},
        "skipped": dataset.skipped,
        "formats": dataset.formats,
    }
    arrays = {f"{name}_{part}": getattr(split, part) for name, split in splits.items()
              for part in ("images", "labels", "votes") if getattr(split, part) is not None}
    save_npz(cache, meta=np.array(json.dumps(meta)), **arrays)
    return dataset


def select_classes(dataset: Dataset, wanted: tuple[str, ...] | None) -> Dataset:
    """Keep only `wanted` classes (in that order; None keeps all) and relabel 0..k-1."""
    names = dataset.class_names if wanted is None else wanted
    unknown = [c for c in names if c not in dataset.class_names]
    if unknown:
        raise UserError(f"unknown class {unknown[0]!r}; the data has: {', '.join(dataset.class_names)}")
    if len(names) < 2:
        raise UserError(f"{dataset.source} has one class ({names[0]}); a classifier needs at least two")

    def pick(split: Split, split_name: str) -> Split:
        parts, new_labels = [], []
        for new, c in enumerate(names):
            idx = np.flatnonzero(split.labels == dataset.class_names.index(c))
            if len(idx) == 0:
                raise UserError(f"class {c!r} has no images in the {split_name} split of {dataset.source}")
            parts.append(idx)
            new_labels.append(np.full(len(idx), new))
        order = np.concatenate(parts)
        out = split.subset(order)
        out.labels = np.concatenate(new_labels).astype(np.int64)
        if out.votes is not None:  # the crowd's votes for the kept classes only
            out.votes = out.votes[:, [dataset.class_names.index(c) for c in names]]
        return out

    validation = None if dataset.validation is None else pick(dataset.validation, "validation")
    return replace(dataset, class_names=tuple(names), train=pick(dataset.train, "train"), test=pick(dataset.test, "test"),
                   validation=validation)


def write_folder_layout(dataset: Dataset, out: Path) -> int:
    """Write every split as OUT/<split>/<class>/<name>.png; returns the number of images written.

    Files go to a hidden sibling folder first, renamed to OUT only when all are written.
    """
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    written = 0
    for split_name, split in dataset.splits().items():
        taken: set[Path] = set()
        for image, label, file in zip(split.images, split.labels, split.files):
            target = _free_png_name(partial / split_name / dataset.class_names[label], Path(file), taken)
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target)
            written += 1
    if out.exists():
        out.rmdir()  # callers ensure it is empty
    partial.rename(out)
    return written


def _free_png_name(folder: Path, source: Path, taken: set[Path]) -> Path:
    """`folder/<stem>.png`, or `<stem>_<suffix>.png` (then numbered) where another image of the folder
    already took that name (a.png beside a.jpg): no image overwrites another."""
    candidates = [source.stem, f"{source.stem}_{source.suffix.lstrip('.')}"]
    candidates += [f"{candidates[1]}_{n}" for n in range(2, len(taken) + 3)]
    target = next(folder / f"{stem}.png" for stem in candidates if folder / f"{stem}.png" not in taken)
    taken.add(target)
    return target


def split_validation(labels: np.ndarray, fraction: float, seed: int,
                     groups: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (fit, validation) index arrays over the training labels. With `groups` (e.g.
    content hashes), images of one group land on the same side: identical images never straddle the
    split. Groups are stratified by their first image's label."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {fraction}")
    if groups is None:
        groups = np.arange(len(labels))
    names, first, group_of = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    try:
        _, val_groups = train_test_split(np.arange(len(names)), test_size=fraction,
                                         stratify=np.asarray(labels)[first], random_state=seed)
    except ValueError:  # too few images of some class for a side of its own
        smallest = int(np.unique(np.asarray(labels)[first], return_counts=True)[1].min())
        raise UserError(f"--val-fraction {fraction:g} cannot split the {len(names)} distinct training images "
                        f"stratified: every class needs images on both sides (the smallest class has {smallest}); "
                        "choose another --val-fraction, add images, or use --val-split given/test") from None
    in_val = np.isin(group_of, val_groups)
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)
