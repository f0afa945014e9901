"""Experiments are TOML files: shared `[defaults]`, a `[grid]` of lists whose product is the set of
runs, and optionally `[[runs]]` tables, each one run per grid point (for grids that are not a full
product, e.g. variants that only transfer models have). Every key is a `fer-bench run` option.
`[weights]` names a weights file per transfer model (`vgg16 = "path/to/file.h5"`), as `--weights
MODEL=PATH` does on the command line, for every row of that model that names none itself."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ..config import RunConfig
from ..errors import UserError
from ..run_folder import RunFolder, RunLocked
from ..data.dataset import Dataset
from .run import execute, load_run_data, prepare_run, score_elsewhere, scored_on

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """A named grid of run configs, and the data sets every run is also scored on (`evaluate`: paths,
    relative ones beside --data)."""

    name: str
    description: str
    configs: list[RunConfig]
    evaluate: list[str] = field(default_factory=list)


SHIPPED = Path(__file__).resolve().parents[1] / "experiments"  # the named experiments inside the package


def find_experiment_file(name_or_path: str | Path) -> Path:
    """An experiment given as a TOML path or as the name of one shipped with fer_bench (`--list`)."""
    path = Path(name_or_path)
    for candidate in (path, SHIPPED / f"{name_or_path}.toml"):
        if candidate.is_file():
            return candidate
    raise UserError(f"no experiment file {name_or_path!r} and no shipped experiment of that name "
                    "(`fer-bench experiment --list` shows them)")


def shipped_experiments() -> list[tuple[str, str]]:
    """(name, the start of its description) of every experiment shipped with fer_bench."""
    listed = []
    for path in sorted(SHIPPED.glob("*.toml")):
        description = " ".join(tomllib.loads(path.read_text()).get("description", "").split())
        listed.append((path.stem, textwrap.shorten(description, 96, placeholder=" ...")))
    return listed


def read_toml(path: Path, sections: tuple[str, ...]) -> dict:
    """An experiment or search-space file's tables, or one clear error: missing, not TOML, or holding a
    section other than `sections`."""
    try:
        spec = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path} is not valid TOML: {error}") from None
    unknown = set(spec) - set(sections)
    if unknown:
        raise UserError(f"{path}: unknown section {sorted(unknown)[0]!r} (use {', '.join(sections)})")
    return spec


def load_experiment(path: Path, data: str | None = None, weights: dict[str, str] | None = None) -> Experiment:
    """Expand an experiment file into run configs; `data` overrides the file's data path, `weights`
    ({model: file}) the file's [weights]."""
    spec = read_toml(path, ("description", "evaluate", "defaults", "grid", "runs", "weights"))
    files = {**spec.get("weights", {}), **(weights or {})}
    evaluate = spec.get("evaluate", [])
    if not isinstance(evaluate, list) or not all(isinstance(item, str) for item in evaluate):
        raise UserError(f"{path}: evaluate must be a list of data set paths")
    defaults = dict(spec.get("defaults", {}))
    grid = spec.get("grid", {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: grid key {key!r} must be a non-empty list")
    if data is not None:
        defaults["data"] = str(data)
    runs = spec.get("runs", [{}])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UserError(f"{path}: [[runs]] must be tables of run options")
    keys = list(grid)
    rows = [_paths_beside_data({**defaults, **dict(zip(keys, combo)), **run}, defaults)
            for combo in itertools.product(*(grid[k] for k in keys)) for run in runs]
    configs = [RunConfig.from_dict(_with_weights(row, files)) for row in rows]
    data_path = defaults.get("data")
    beside = Path(data_path).parent if data_path else Path(".")
    return Experiment(Path(path).stem, spec.get("description", ""), configs,
                      [str((beside / item).resolve()) for item in evaluate])


def _with_weights(row: dict, files: dict[str, str]) -> dict:
    """A row with the weights file named for its model, unless the row names its own weights."""
    if not files:
        return row
    from ..models import model_info

    for model, file in files.items():
        if not model_info(model).transfer:
            raise UserError(f"weights {model}={file}: {model} is trained from scratch and takes no weights file")
    model = row.get("model", "scratch")
    return {**row, "weights": files[model]} if model in files and "weights" not in row else row


def _paths_beside_data(values: dict, defaults: dict) -> dict:
    """An experiment row whose relative data paths (its own `data`, `also_train`) name folders beside the
    experiment's --data, as the shared data sets sit side by side (also_train = "rafdb,sfew:2" with
    --data .../fer2013)."""
    if not defaults.get("data"):
        return values
    beside = Path(defaults["data"]).parent
    if values.get("data") and not Path(values["data"]).is_absolute() and values["data"] != defaults["data"]:
        values["data"] = str(beside / values["data"])
    if values.get("also_train"):
        items = [item.strip() for item in values["also_train"].split(",") if item.strip()]
        values["also_train"] = ",".join(item if Path(item).is_absolute() else str(beside / item) for item in items)
    return values


def plan(experiment: Experiment, output: Path) -> list[tuple[RunConfig, Path, str]]:
    """(prepared config, run folder, status) for every run: 'complete', 'partial' or 'to do'."""
    planned = []
    for cfg in experiment.configs:
        spec = prepare_run(cfg, output, load=_loaded_once, fetch_weights=False)
        run_dir = Path(output) / spec.run_id
        status = "complete" if RunFolder(run_dir).is_complete() else ("partial" if run_dir.exists() else "to do")
        planned.append((spec.cfg, run_dir, status))
    return planned


def _loaded_once(cfg: RunConfig) -> Dataset:
    """A run's data set, read once per process for every run on the same data."""
    return _data_set(cfg.data, cfg.test_usage, cfg.dedupe, cfg.classes, cfg.strict, cfg.also_train)


@functools.lru_cache(maxsize=None)
def _data_set(data, test_usage: str, dedupe: bool, classes: str, strict: bool, also_train: str | None) -> Dataset:
    return load_run_data(RunConfig(data=data, test_usage=test_usage, dedupe=dedupe, classes=classes, strict=strict,
                                   also_train=also_train))


def estimated_seconds(cfg: RunConfig) -> tuple[float, str] | None:
    """A run's expected time on this machine from its FLOPs and what `benchmark --train` measured
    here (cached): (seconds, a note on the rates used, '' when they are this model's own), or None
    when a rate it needs has not been measured yet. Training epochs are timed at the measured
    training rate of this model, precision and recipe (else another recipe, else the mean of other
    models); a frozen base's one feature pass over every image of the data set, forward only, at the
    peak measured for the precision, which large convolutions run close to."""
    from ..benchmarks.training_speed import measured_rates

    rates = measured_rates()
    fingerprint = _loaded_once(cfg).fingerprint()
    counts = {split: sum(per_class.values()) for split, per_class in fingerprint["counts"].items()}
    feature_pass, training = cost_parts(cfg)
    seconds, notes = 0.0, []
    if feature_pass:
        peak = rates.get(f"peak|{cfg.precision_used}")
        if peak is None:
            return None
        seconds += feature_pass * sum(counts.values()) / 1e9 / peak
        notes.append("features at the measured peak")
    if training:
        rate, source = _training_rate(rates, cfg)
        if rate is None:
            return None
        fit_images = counts["train"] * (1 - cfg.val_fraction if cfg.val_split == "train" else 1)
        seconds += training * fit_images / 1e9 / rate
        notes += [f"rate of {source}"] if source else []
    return seconds, "; ".join(notes)


def _training_rate(rates: dict[str, float], cfg: RunConfig) -> tuple[float | None, str]:
    """(achieved training GFLOP/s, '' or where it came from) for a run's model, precision and recipe."""
    same_model = [r for key, r in rates.items() if key.startswith(f"{cfg.model}|{cfg.precision_used}|")]
    same_precision = [r for key, r in rates.items()
                      if not key.startswith("peak|") and key.split("|")[1:2] == [cfg.precision_used]]
    rate = rates.get(f"{cfg.model}|{cfg.precision_used}|{cfg.recipe}")
    if rate is not None:
        return rate, ""
    if same_model:
        return sum(same_model) / len(same_model), "another recipe"
    if same_precision:
        return sum(same_precision) / len(same_precision), "other models"
    return None, ""


def missing_weights(configs: list[RunConfig]) -> list[str]:
    """Why each weights file the runs need cannot be had (one line per file; empty: all present)."""
    from ..models import model_info
    from ..models.transfer import resolve_weights_file

    problems = {}
    for cfg in configs:
        info = model_info(cfg.model)
        key = (info.name, cfg.weights, cfg.width, cfg.image_size)
        if info.transfer and cfg.weights != "none" and key not in problems:
            try:
                resolve_weights_file(info, cfg.weights, cfg.width, cfg.image_size)
                problems[key] = None
            except UserError as error:
                problems[key] = str(error)
    return [problem for problem in problems.values() if problem]


def weights_problem(cfg: RunConfig) -> str | None:
    """Why a run's weights cannot be had, or None."""
    problems = missing_weights([cfg])
    return problems[0] if problems else None


def cost_parts(cfg: RunConfig) -> tuple[float, float]:
    """A run's two kinds of work in forward-pass FLOPs: (per image of the data set, a frozen base's one
    feature pass; per training image, its training epochs, a backward pass being about twice a
    forward one). Scratch models and bases trained end to end (`full`) only train; a frozen base only
    extracts, unless fine-tuning adds epochs through it."""
    from ..models import model_info

    flops = _flops(cfg.model, cfg.image_size, cfg.width)
    if not model_info(cfg.model).transfer or cfg.variant == "full":
        return 0.0, 3 * flops * cfg.epochs
    return flops, 3 * flops * (cfg.finetune_epochs if cfg.variant == "finetune" else 0)


def expected_cost(cfg: RunConfig) -> float:
    """A run's expected cost in forward-pass FLOPs per image, for balancing shards: both parts of
    `cost_parts` together."""
    return sum(cost_parts(cfg))


@functools.lru_cache(maxsize=None)
def _flops(model: str, size: int, width: float | None) -> int:
    """Forward FLOPs per image of one (model, size, width): from the per-machine FLOPs cache, else
    counted on the built model once and stored there (building a base takes seconds; planning a
    grid should not)."""
    import json

    from ..data.dataset import cache_dir
    from ..files import write_json
    from ..models.registry import builder_key

    path = cache_dir() / "flops.json"
    key = f"{builder_key(model)}|{model}|{size}|{width}"  # the model's code by content, not the package version
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        from ..models import create_model
        from ..models.flops import flops_per_image

        known[key] = flops_per_image(create_model(model, 7, size, weights="none", width=width).full)
        write_json(path, known)
    return int(known[key])


def parse_shard(spec: str | None, environ=os.environ) -> tuple[int, int] | None:
    """'K/N' (1 ≤ K ≤ N) or 'slurm' (from SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT) → (K, N)."""
    if spec is None:
        return None
    if spec == "slurm":
        try:
            task, first = int(environ["SLURM_ARRAY_TASK_ID"]), int(environ.get("SLURM_ARRAY_TASK_MIN", "1"))
            count = int(environ["SLURM_ARRAY_TASK_COUNT"])
        except (KeyError, ValueError):
            raise UserError("--shard slurm needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT "
                            "(run it inside a Slurm job array)") from None
        spec = f"{task - first + 1}/{count}"
    try:
        k, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise UserError(f"--shard must be K/N (e.g. 2/4) or 'slurm', got {spec!r}") from None
    if not 1 <= k <= n:
        raise UserError(f"--shard {spec}: K must be between 1 and N")
    return k, n


def largest_first(planned: list[tuple[RunConfig, Path, str]]) -> list[int]:
    """The grid's runs by expected cost, largest first (ties by run id)."""
    return sorted(range(len(planned)), key=lambda i: (-expected_cost(planned[i][0]), planned[i][1].name))


def shard_plan(planned: list[tuple[RunConfig, Path, str]], n: int) -> list[list[int]]:
    """Split the grid into `n` disjoint parts of similar expected cost (largest first, each to the
    least-loaded part; ties broken by run id), the same on every machine whatever is complete."""
    parts: list[list[int]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for i in largest_first(planned):
        lightest = min(range(n), key=lambda p: (loads[p], p))
        parts[lightest].append(i)
        loads[lightest] += expected_cost(planned[i][0])
    return [sorted(part) for part in parts]


def score_unscored(experiment: Experiment, cfg: RunConfig, run_dir: Path, echo=print, prefix: str = "") -> None:
    """Score a complete run on the experiment's other data sets it has not been scored on yet."""
    run = RunFolder(run_dir)
    if run.is_complete() and (unscored := sorted(set(experiment.evaluate) - scored_on(run))):
        echo(f"{prefix or run_dir.name}: scoring on {', '.join(Path(p).name for p in unscored)}")
        score_elsewhere(run, cfg.test_usage, [(p, None) for p in unscored])


def run_experiment(experiment: Experiment, output: Path, echo=print, shard: tuple[int, int] | None = None,
                   pool: bool = False) -> tuple[list[Path], list[Path]]:
    """Run every run of the grid (or of one shard of it) that is not complete yet; as one of a pool of
    local workers (`pool`), every run not complete, largest first, each taken by whichever worker
    reaches it first, so the work is shared however much of the grid was complete already.

    Returns (this part's run folders, the grid's run folders that are not complete yet). A run
    another worker is training right now is skipped and left to it. A run's folder is the one
    `execute` returns (its id counts pretrained weights by content, fetched only then), not the planned one."""
    planned = plan(experiment, output)
    if pool:
        mine = [i for i in largest_first(planned) if planned[i][2] != "complete"]
    else:
        mine = list(range(len(planned))) if shard is None else shard_plan(planned, shard[1])[shard[0] - 1]
    done = []
    for count, i in enumerate(mine, start=1):
        cfg, run_dir, status = planned[i]
        prefix = f"[{count}/{len(mine)}] {run_dir.name}"
        if status == "complete":
            echo(f"{prefix}: complete, skipped")
        elif problem := weights_problem(cfg):
            echo(f"{prefix}: skipped, its weights are missing: {problem}")
        else:
            echo(f"{prefix}: {'resuming' if status == 'partial' else 'running'}")
            try:
                run_dir = execute(cfg, output=output)
            except RunLocked:
                echo(f"{prefix}: another worker is training it, skipped")
                done.append(run_dir)
                continue  # and scoring it: that worker does
        score_unscored(experiment, cfg, run_dir, echo, prefix)
        done.append(run_dir)
    missing = [d for d in done if not RunFolder(d).is_complete()] + [
        run_dir for i, (_, run_dir, _) in enumerate(planned) if i not in mine and not RunFolder(run_dir).is_complete()]
    return done, missing
