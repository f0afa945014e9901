"""Experiments are TOML files: shared `[defaults]` plus a `[grid]` of lists whose product is the
set of runs. Every key is a `fer-bench run` option (RunConfig field)."""

from __future__ import annotations

import itertools
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .config import RunConfig, resolve, resolve_val_split
from .run import execute, is_complete, load_run_data, run_id

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """A named grid of run configs."""

    name: str
    description: str
    configs: list[RunConfig]


def find_experiment_file(name_or_path: str | Path) -> Path:
    """An experiment given as a TOML path or as a name under ./experiments/."""
    path = Path(name_or_path)
    for candidate in (path, Path("experiments") / f"{name_or_path}.toml"):
        if candidate.is_file():
            return candidate
    raise UserError(f"no experiment file {name_or_path!r} (looked for it and for experiments/{name_or_path}.toml)")


def load_experiment(path: Path, data: str | None = None) -> Experiment:
    """Expand an experiment file into run configs; `data` overrides the file's data path."""
    try:
        spec = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path} is not valid TOML: {error}") from None
    unknown = set(spec) - {"description", "defaults", "grid"}
    if unknown:
        raise UserError(f"{path}: unknown section {sorted(unknown)[0]!r} (use description, [defaults], [grid])")
    defaults = dict(spec.get("defaults", {}))
    grid = spec.get("grid", {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: grid key {key!r} must be a non-empty list")
    if data is not None:
        defaults["data"] = str(data)
    keys = list(grid)
    configs = [RunConfig.from_dict({**defaults, **dict(zip(keys, combo))})
               for combo in itertools.product(*(grid[k] for k in keys))]
    return Experiment(Path(path).stem, spec.get("description", ""), configs)


def plan(experiment: Experiment, output: Path) -> list[tuple[RunConfig, Path, str]]:
    """(resolved config, run folder, status) for every run: 'complete', 'partial' or 'to do'."""
    planned = []
    for cfg in experiment.configs:
        cfg = resolve(cfg)
        dataset = load_run_data(cfg)
        cfg = resolve_val_split(cfg, dataset.validation is not None)
        run_dir = Path(output) / run_id(cfg, dataset.fingerprint())
        status = "complete" if is_complete(run_dir) else ("partial" if run_dir.exists() else "to do")
        planned.append((cfg, run_dir, status))
    return planned


def check_weights_available(configs: list[RunConfig]) -> None:
    """Fail before any training if a transfer run's weights cannot be had."""
    from .models import model_info
    from .models.transfer import resolve_weights_file

    for cfg in configs:
        info = model_info(cfg.model)
        if info.transfer and cfg.weights != "none":
            resolve_weights_file(info, cfg.weights)


def run_experiment(experiment: Experiment, output: Path, echo=print) -> list[Path]:
    """Run every run of the grid that is not complete yet; returns all run folders."""
    planned = plan(experiment, output)
    todo = [cfg for cfg, _, status in planned if status != "complete"]
    check_weights_available(todo)
    done = []
    for i, (cfg, run_dir, status) in enumerate(planned, start=1):
        prefix = f"[{i}/{len(planned)}] {run_dir.name}"
        if status == "complete":
            echo(f"{prefix}: complete, skipped")
        else:
            echo(f"{prefix}: {'resuming' if status == 'partial' else 'running'}")
            execute(cfg, output=output)
        done.append(run_dir)
    return done
