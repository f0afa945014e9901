"""A search over run options as a command whose record stays with the runs (Optuna).

A search space is a TOML file: `[defaults]` are fixed run options, `[search]` names the options to
search, each as a list of choices or as a range `{low, high}` (with `log = true` for a log scale,
`step` for a grid; integers give an integer range). Every trial is a normal run in the results
folder (so `compare` shows it and the same command finds it again); it is scored on its validation
split only: the validation accuracy of its best checkpoint, which is chosen by validation loss.
Trials are pruned on their validation accuracy per epoch (median rule), raising out of training,
so a pruned run stays resumable and is never marked complete. The study lives in one SQLite file
beside the runs (`<results>/tune/<space>.db`): running the command again continues it, and a trial
cut off by a kill is tried again (its run resumes from its last epoch). At the end the best trial's
options are written as an experiment file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras

from ..config import RunConfig
from ..errors import UserError
from ..files import atomic_path, save_figure, write_csv
from .experiment import SHIPPED, read_toml

log = logging.getLogger(__name__)

SAMPLER_SEED = 0  # TPE's own draws: the same space and trial results give the same next trial


@dataclass
class SearchSpace:
    """A parsed search-space file."""

    name: str
    description: str
    defaults: dict
    search: dict  # option -> list of choices, or {"low", "high", "log"?, "step"?}

    @property
    def study_name(self) -> str:
        """The space's name plus a hash of its content: editing the space starts a new study."""
        spec = json.dumps({"defaults": self.defaults, "search": self.search}, sort_keys=True)
        return f"{self.name}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


# options that decide which images validate a trial: a search over them ranks trials on different images
# (the seed too, unless val_seed fixes the validation split)
VALIDATION_CHOOSERS = {"val_split", "val_fraction", "val_seed", "data", "classes", "test_usage", "dedupe", "also_train"}


def load_space(path: Path, data: str | None = None) -> SearchSpace:
    """Read and check a search-space TOML (a path, or the name of one shipped with fer_bench, e.g.
    vggnet_quick); `data` overrides its data path."""
    shipped = SHIPPED / "spaces" / f"{path}.toml"
    path = shipped if not Path(path).is_file() and shipped.is_file() else Path(path)
    spec = read_toml(path, ("description", "defaults", "search"))
    defaults, search = dict(spec.get("defaults", {})), dict(spec.get("search", {}))
    if data is not None:
        defaults["data"] = str(data)
    if not search:
        raise UserError(f"{path}: [search] names no option to search")
    for key, values in search.items():
        if key in defaults:
            raise UserError(f"{path}: {key!r} is both fixed in [defaults] and searched in [search]")
        ranged = isinstance(values, dict) and {"low", "high"} <= set(values) <= {"low", "high", "log", "step"}
        if not ranged and not (isinstance(values, list) and values):
            raise UserError(f"{path}: search option {key!r} must be a non-empty list of choices or "
                            "{ low = ..., high = ... } (optionally log = true or step = ...)")
    searched_splits = search.get("val_split", [])
    if defaults.get("val_split") == "test" or (isinstance(searched_splits, list) and "test" in searched_splits):
        raise UserError(f"{path}: a search scores trials on validation only; val_split 'test' would choose on the test split")
    if moved := sorted(set(search) & (VALIDATION_CHOOSERS | ({"seed"} if "val_seed" not in defaults else set()))):
        raise UserError(f"{path}: searching {moved[0]!r} would validate trials on different images, so their scores "
                        "could not be ranked; fix it in [defaults]")
    RunConfig.from_dict({**defaults, **{k: _example(v) for k, v in search.items()}})  # unknown options, wrong types
    return SearchSpace(Path(path).stem, spec.get("description", ""), defaults, search)


def _example(values):
    return values["low"] if isinstance(values, dict) else values[0]


def suggest(trial, space: SearchSpace) -> dict:
    """One trial's values of the searched options."""
    chosen = {}
    for key, values in space.search.items():
        if isinstance(values, list):
            chosen[key] = trial.suggest_categorical(key, values)
        elif all(isinstance(values[k], int) for k in ("low", "high")):
            chosen[key] = trial.suggest_int(key, values["low"], values["high"], step=values.get("step", 1),
                                            log=values.get("log", False))
        else:
            chosen[key] = trial.suggest_float(key, values["low"], values["high"], step=values.get("step"),
                                              log=values.get("log", False))
    return chosen


class PruneOnValidation(keras.callbacks.Callback):
    """Reports each epoch's validation accuracy to the trial; raises optuna.TrialPruned when the
    pruner says the trial is worse than the median of earlier ones at that epoch."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch, logs=None):
        import optuna

        self.trial.report(float(logs["val_accuracy"]), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"validation accuracy {logs['val_accuracy']:.4f} after epoch {epoch + 1}")


def open_study(space: SearchSpace, output: Path):
    """The space's study in `<output>/tune/<space>.db` (created or continued); trials a kill cut off
    are marked failed and queued again with the same options."""
    import optuna

    folder = Path(output) / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=space.study_name, storage=f"sqlite:///{(folder / space.name).with_suffix('.db')}",
        load_if_exists=True, direction="maximize", sampler=optuna.samplers.TPESampler(seed=SAMPLER_SEED),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    for cut_off in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(cut_off.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(cut_off.params)
        log.info("trial %d was cut off; trying its options again (its run resumes)", cut_off.number)
    return study


def run_trial(trial, space: SearchSpace, output: Path) -> float:
    """Train (or find, or resume) the run of one trial; its validation accuracy at the best checkpoint."""
    from ..run_folder import RunFolder
    from .run import execute

    chosen = suggest(trial, space)
    log.info("trial %d: %s", trial.number, ", ".join(f"{k} = {v}" for k, v in chosen.items()))
    run_dir = execute(RunConfig.from_dict({**space.defaults, **chosen}), output=output,
                      callbacks=(PruneOnValidation(trial),))
    trial.set_user_attr("run", run_dir.name)
    metrics = RunFolder(run_dir).metrics
    trial.set_user_attr("train_seconds", metrics["total_train_seconds"])
    return metrics["best_val_accuracy"]


def tune(space: SearchSpace, trials: int, output: Path = Path("results")):
    """Run trials until the study has `trials` finished (complete or pruned) ones; write its record.
    Returns (study, folder holding trials.csv, trials.png and best.toml)."""
    import optuna

    study = open_study(space, output)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done < trials:
        log.info("study %s: %d trials done, running %d more", space.study_name, done, trials - done)
    while len(study.get_trials(deepcopy=False, states=finished)) < trials:
        study.optimize(lambda t: run_trial(t, space, output), n_trials=1, catch=())
        last = study.trials[-1]
        if last.state == optuna.trial.TrialState.PRUNED:
            log.info("trial %d pruned after epoch %d (its run stays resumable)", last.number,
                     max(last.intermediate_values, default=-1) + 1)
        else:
            log.info("trial %d %s: validation accuracy %.4f", last.number, last.state.name.lower(), last.value)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise UserError(f"study {space.study_name}: every trial was pruned; nothing to recommend")
    return study, write_record(study, space, Path(output))


def write_record(study, space: SearchSpace, output: Path) -> Path:
    """trials.csv (every trial: options, state, validation accuracy, run id, seconds), trials.png and
    best.toml (the best trial's options as an experiment file) in `<output>/tune/<study>/`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = output / "tune" / space.study_name
    folder.mkdir(parents=True, exist_ok=True)
    table = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
    write_csv(folder / "trials.csv", table.rename(columns={"value": "validation_accuracy"}), index=False)
    fig, ax = plt.subplots(figsize=(6, 4))
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        rows = table[table["state"] == state]
        values = rows["value"] if state == "COMPLETE" else rows["number"].map(
            lambda n: max(study.trials[n].intermediate_values.values(), default=float("nan")))
        ax.scatter(rows["number"], values, marker=marker, label=state.lower() + (" (its last epoch)" if
                                                                                 state == "PRUNED" else ""))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{space.study_name}: best {study.best_value:.4f} (trial {study.best_trial.number})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(folder / "trials.png", fig, dpi=110)
    plt.close(fig)
    best = study.best_trial
    lines = [f'description = """Best of {len(study.trials)} trials of search space {space.name} ({space.study_name}): '
             f'validation accuracy {best.value:.4f}, trial {best.number}, run {best.user_attrs.get("run")}."""', "",
             "[defaults]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in {**space.defaults, **best.params}.items()]
    with atomic_path(folder / "best.toml") as path:
        Path(path).write_text("\n".join(lines) + "\n")
    return folder


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))
