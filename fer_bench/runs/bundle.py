"""The bundled model: a complete run copied into the package (`fer-bench bundle`, for maintainers),
its record files with the data named by content instead of the training machine's paths, and its
model computing in float32 so that it runs on every CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import UserError
from ..files import folder_replacing, write_json
from ..models.saved import BUNDLED_DIR, in_float32, load_saved_model
from ..run_folder import is_complete

BUNDLE_FILES = ("config.json", "data.json", "environment.json", "metrics.json", "per_class.csv",
                "confusion_matrix.csv", "confusion_matrix.png", "history.csv", "curves.png", "calibration.json",
                "reliability.png", "uncertainty.json", "uncertainty.png", "MODEL_CARD.md", "complete.json")


def name_data_by_fingerprint(folder: Path) -> None:
    """Replace the training machine's data paths in a shipped run's config.json and data.json by the
    data's folder names and content fingerprints, which mean the same on every machine."""
    config, data = (json.loads((folder / name).read_text()) for name in ("config.json", "data.json"))
    if config.get("data"):
        name = Path(config["data"]).name
        config["data"] = f"{name} (fingerprint: train {data['train_sha256']}, test {data['test_sha256']})"
        data["source"] = name
    for source in data.get("also_trained_on", []):  # --also-train sources: by folder name and content too
        source["source"] = Path(source["source"]).name
    if config.get("also_train"):
        config["also_train"] = ",".join(f"{Path(item.rsplit(':', 1)[0]).name}:{item.rsplit(':', 1)[1]}"
                                        for item in config["also_train"].split(","))
    write_json(folder / "config.json", config)
    write_json(folder / "data.json", data)


def write_bundle(run_dir: Path, target: Path = BUNDLED_DIR) -> Path:
    """Copy a complete run into `target` as the bundled model: its record files and its best model
    without optimizer state (a third of the size), computing in float32 (runs on every CPU). Written
    beside and renamed into place."""
    if not is_complete(run_dir):
        raise UserError(f"not a complete run folder: {run_dir}")
    with folder_replacing(target, ".bundle-") as work:
        in_float32(load_saved_model(run_dir / "best.keras")).save(work / "best.keras")
        for name in BUNDLE_FILES:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, work / name)
        name_data_by_fingerprint(work)
        (work / "SOURCE").write_text(f"{run_dir.name}\n")
    return target
