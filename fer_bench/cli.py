"""The `fer-bench` command line. Each command is a thin shell over one module."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import sys
import time
import typing
from pathlib import Path
from typing import Optional

import typer

from .durations import duration
from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Frozen-base transfer learning vs. a scratch CNN on FER2013.")
# How every command names a run (run_folder.find_run)
RUN_HELP = "A run folder, a run id in --results, 'latest' (the run completed last) or 'bundled' (the model shipped with fer-bench)"
data_app = typer.Typer(no_args_is_help=True, help="Make, look at and convert data sets.")
app.add_typer(data_app, name="data")


def _print_version(asked: bool) -> None:
    if asked:
        from . import __version__

        typer.echo(f"fer-bench {__version__}")
        raise typer.Exit()


_VERBOSE = [False]


@app.callback()
def global_options(verbose: bool = typer.Option(False, "--verbose", help="Also show TensorFlow's own log lines."),
                   version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                                help="Print the version and exit.")):
    """Frozen-base transfer learning vs. a scratch CNN on FER2013."""
    from .quiet import quiet_native_logs

    _VERBOSE[0] = verbose
    quiet_native_logs(verbose)


def _needs_tensorflow(command: str, params: dict) -> bool:
    """Whether a command computes with TensorFlow: not `data ...`, nor `experiment --list`, nor `predict` with
    the bundled model or an exported file and a detector that runs on LiteRT or OpenCV."""
    if command == "predict":
        run = params.get("run")
        return not ((run in (None, "bundled") or str(run).endswith((".onnx", ".tflite")))
                    and params.get("detector") in ("blazeface", "haar", "none"))
    if command == "benchmark" and any(params.get(p) is not None for p in ("video", "photos", "runtimes")):  # its `predict` processes import what they need
        return False  # (and a child forked from a big parent would report the parent's memory as its peak)
    return not (command.startswith("data ") or params.get("list_shipped"))


def _importing_tensorflow_first(name: str, callback):
    """`callback`, after a quiet TensorFlow import when the command needs one: arguments (and --help,
    usage errors) are read before TensorFlow's seconds of start-up are paid."""
    import functools

    @functools.wraps(callback)
    def wrapped(*args, **params):
        if _needs_tensorflow(name, params):
            from .quiet import import_tensorflow

            import_tensorflow(_VERBOSE[0])
        return callback(*args, **params)

    return wrapped


def _command_line():
    """The Click command behind `app`, each subcommand importing TensorFlow only once its arguments are read."""
    root = typer.main.get_command(app)
    groups = [root]
    while groups:
        group = groups.pop()
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a group of commands (`data`)
                groups.append(command)
            elif command.callback is not None:
                full_name = name if group is root else f"{group.name} {name}"
                command.callback = _importing_tensorflow_first(full_name, command.callback)
    return root


def _run_command_signature() -> inspect.Signature:
    """`fer-bench run`'s options, one per RunConfig field (name, default, help from its declaration)."""
    from .config import RECORD, RunConfig

    hints = typing.get_type_hints(RunConfig)
    parameters = []
    for f in dataclasses.fields(RunConfig):
        if f.metadata["role"] == RECORD:
            continue
        kinds = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None)]
        annotation = Optional[kinds[0]] if type(None) in typing.get_args(hints[f.name]) else kinds[0]
        flag = "--" + f.name.replace("_", "-")
        info = typer.Option(f.default, flag, *f.metadata["flags"], help=f.metadata["help"] or None)
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))
    parameters += [
        inspect.Parameter("results", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                          default=typer.Option(Path("results"), help="Folder that holds run folders.")),
        inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, help="Redo a run whose folder is already complete.")),
    ]
    return inspect.Signature(parameters)


def run(**options):
    """Train and evaluate one model; writes a complete run folder and prints its headline metrics.

    Example: fer-bench run --model vggnet --recipe strong --classes all --data path/to/fer2013"""
    results, force = options.pop("results"), options.pop("force")
    from .config import RunConfig
    from .run_folder import RunFolder
    from .runs.run import execute

    run_dir = execute(RunConfig(**options), output=results, force=force)
    metrics = RunFolder(run_dir).metrics
    typer.echo(f"run folder: {run_dir}")
    typer.echo(
        f"test accuracy {metrics['accuracy']:.4f} (95% CI {metrics['accuracy_ci95'][0]:.4f}-{metrics['accuracy_ci95'][1]:.4f}), "
        f"balanced accuracy {metrics['balanced_accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"majority baseline {metrics['majority_baseline_accuracy']:.4f}, train time {metrics['total_train_seconds']:.0f} s"
    )
    if "tta" in metrics:
        typer.echo(f"with {metrics['tta']['mode']} test-time augmentation: accuracy {metrics['tta']['accuracy']:.4f}")


run.__signature__ = _run_command_signature()
app.command()(run)


@app.command()
def experiment(
    file: Optional[Path] = typer.Argument(None, help="Experiment TOML, or the name of a shipped one (--list)."),
    data: Optional[Path] = typer.Option(None, help="Dataset folder or fer2013.csv for every run."),
    results: Path = typer.Option(Path("results"), help="Folder that holds run folders."),
    list_shipped: bool = typer.Option(False, "--list", help="List the experiments shipped with fer_bench (with a "
                                      "name: print its whole description) and exit."),
    dry_run: bool = typer.Option(False, help="List the runs (of --shard's part) and their status; train nothing."),
    shard: Optional[str] = typer.Option(None, help="Run only part K of N of the grid ('K/N'), or 'slurm' to take "
                                        "K/N from the Slurm job array."),
    jobs: int = typer.Option(1, help="Local worker processes, each with its share of the cores (or one GPU)."),
    no_compare: bool = typer.Option(False, "--no-compare", help="Do not write the comparison at the end."),
    weights: Optional[list[str]] = typer.Option(None, help="MODEL=PATH: the weights file of every run of a transfer "
                                                "model (repeatable; over the file's \\[weights] table)."),
    pool: bool = typer.Option(False, "--pool", hidden=True, help="As one of --jobs' workers: take every run not "
                              "complete that no other worker is training, largest first."),
):
    """Run a grid of runs (skipping complete ones; runs whose weights are missing are reported and
    skipped), then write its comparison.

    Example: fer-bench experiment original_attempt --data path/to/fer2013 --dry-run"""
    from .runs.experiment import (
        estimated_seconds,
        find_experiment_file,
        load_experiment,
        missing_weights,
        parse_shard,
        plan,
        run_experiment,
        score_unscored,
        shard_plan,
        shipped_experiments,
    )

    if list_shipped and file is not None:  # one experiment's whole description
        typer.echo(load_experiment(find_experiment_file(str(file))).description.strip())
        return
    if list_shipped:
        for name, summary in shipped_experiments():
            typer.echo(f"{name:22} {summary}")
        typer.echo("(`fer-bench experiment NAME --list` prints one whole)")
        return
    if file is None:
        raise UserError("name an experiment (a TOML file or a shipped name; `fer-bench experiment --list` shows them)")
    path = find_experiment_file(str(file))
    files = _weights_files(weights)
    spec = load_experiment(path, None if data is None else str(data), files)
    part = parse_shard(shard)
    if jobs < 1 or (jobs > 1 and part is not None) or (pool and (part is not None or jobs > 1)):
        raise UserError("--jobs must be at least 1, and cannot be combined with --shard")
    if dry_run:
        from .models import model_info

        planned = plan(spec, results)
        shown = range(len(planned)) if part is None else shard_plan(planned, part[1])[part[0] - 1]
        title = f"{spec.name}: {len(planned)} runs" + (f", part {part[0]}/{part[1]}: {len(shown)} of them" if part else "")
        typer.echo(title)
        for problem in missing_weights([planned[i][0] for i in shown if planned[i][2] != "complete"]):
            typer.echo(f"  missing weights: {problem}")
        total, unknown = 0.0, []
        for i in shown:
            cfg, run_dir, status = planned[i]
            weights = f", {cfg.variant}, weights {cfg.weights}" if model_info(cfg.model).transfer else ""
            weights += f", framing {cfg.framing}" if cfg.framing != "fer" else ""
            estimate = estimated_seconds(cfg) if status != "complete" else None
            if status != "complete" and estimate is None:
                unknown.append(f"{cfg.model}|{cfg.precision_used}")
            total += estimate[0] if estimate else 0.0
            cost = "" if estimate is None else f", ~{duration(estimate[0])}" + (f" ({estimate[1]})" if estimate[1] else "")
            typer.echo(f"  {status:<8} {run_dir.name}  ({cfg.recipe} recipe{weights}, {cfg.epochs} epochs, "
                       f"{cfg.optimizer} lr {cfg.learning_rate}, batch {cfg.batch_size}, val {cfg.val_split}{cost})")
        known = sum(planned[i][2] != "complete" for i in shown) - len(unknown)
        summary = f"estimated training time on this machine: ~{duration(total)}" if known else "no time estimate yet"
        if unknown:
            summary += (f"{' plus' if known else ':'} {len(unknown)} runs without a measured rate (`fer-bench benchmark "
                        f"--train --model {','.join(sorted({u.split('|')[0] for u in unknown}))} --precision "
                        f"{','.join(sorted({u.split('|')[1] for u in unknown}))}` measures it)")
        typer.echo(summary)
        return
    if jobs > 1:
        from .runs.workers import run_workers

        codes = run_workers(path, jobs, data, results, echo=typer.echo, weights=files)
        if any(codes):
            raise UserError(f"{sum(c != 0 for c in codes)} of {jobs} workers failed (exit codes {codes})")
        planned = plan(spec, results)
        for cfg, run_dir, status in planned:  # runs complete before the workers started, not scored yet
            score_unscored(spec, cfg, run_dir, typer.echo)
        missing = [run_dir for _, run_dir, status in planned if status != "complete"]
    else:
        _, missing = run_experiment(spec, results, echo=typer.echo, shard=part, pool=pool)
        if pool:
            return  # the workers' parent says what is left
    if missing:
        where = "in the grid's other parts" if part else "skipped above, each with its reason"
        typer.echo(f"{len(missing)} runs of {spec.name} are not complete yet ({where}); "
                   f"`fer-bench compare {spec.name}` once every run has finished")
    elif not no_compare:
        _write_comparison([run_dir for _, run_dir, _ in plan(spec, results)], results / "comparisons" / spec.name)


def _weights_files(items: Optional[list[str]]) -> dict[str, str]:
    """--weights MODEL=PATH options → {model: path}."""
    files = {}
    for item in items or []:
        model, sep, weights_file = item.partition("=")
        if not sep or not model or not weights_file:
            raise UserError(f"--weights takes MODEL=PATH (e.g. vgg16=path/to/vgg16_notop.h5), got {item!r}")
        files[model.strip()] = weights_file.strip()
    return files


def _write_comparison(run_dirs: list[Path], out: Path, baseline: str | None = None, where: list[str] = ()) -> None:
    from .reporting.compare import compare
    from .run_folder import RESULTS_FORMAT

    result = compare(run_dirs, out, baseline, where)
    for run_dir in result.incomplete:
        typer.echo(f"skipped (incomplete): {run_dir}")
    for run_dir in result.stale:
        typer.echo(f"skipped (stale: written in another results format than this version's {RESULTS_FORMAT}, or a "
                   f"finetune run from before the layers it trains were recorded; rerun its command): {run_dir}")
    for run_dir, reason in result.unreadable:
        typer.echo(f"skipped (unreadable: {reason}): {run_dir}")
    typer.echo(result.markdown)
    if result.previous is not None:
        typer.echo(f"the previous comparison there was kept as {result.previous}")
    typer.echo(f"comparison written to {result.folder}")


@app.command("tune")
def tune_command(
    space: Path = typer.Argument(..., help="Search-space TOML: fixed [defaults] and the [search]ed run options."),
    trials: int = typer.Option(..., help="Finished trials (complete or pruned) the study should have; running "
                               "the command again with more continues it."),
    data: Optional[Path] = typer.Option(None, help="Dataset folder or fer2013.csv for every trial."),
    results: Path = typer.Option(Path("results"), help="Folder that holds run folders (the study goes into its tune/)."),
):
    """Search run options with Optuna (TPE, median pruning per epoch), scored on validation only; every
    trial is a run in --results; prints the best options as an experiment file.

    Example: fer-bench tune vggnet_quick --trials 6 --data path/to/fer2013"""
    from .runs.tune import load_space, tune

    if trials < 1:
        raise UserError("--trials must be at least 1")
    study, folder = tune(load_space(space, None if data is None else str(data)), trials, results)
    best = study.best_trial
    pruned = sum(t.state.name == "PRUNED" for t in study.trials)
    typer.echo(f"{len(study.trials)} trials ({pruned} pruned); best: trial {best.number}, validation accuracy "
               f"{best.value:.4f}, run {best.user_attrs.get('run')}")
    typer.echo(f"record: {folder / 'trials.csv'}, {folder / 'trials.png'}; best options as an experiment file "
               f"({folder / 'best.toml'}):\n")
    typer.echo((folder / "best.toml").read_text())


@app.command("ensemble")
def ensemble_command(
    runs: list[str] = typer.Argument(..., help="Two or more complete runs (folders, or run ids in --results) with the "
                                     "same classes, data and validation split."),
    results: Path = typer.Option(Path("results"), help="Folder that holds run folders (and the ensemble's)."),
    tta: Optional[str] = typer.Option(None, help="Test-time augmentation reported beside the plain numbers: none, flip "
                                      "or crops; default: the first member's."),
    force: bool = typer.Option(False, help="Redo an ensemble whose folder is already complete."),
):
    """Average runs' calibrated probabilities into a new run folder that compare, evaluate, predict and app
    take like any run; its training cost is the sum of its members'.

    Example: fer-bench ensemble RUN_ID_1 RUN_ID_2 --results results"""
    from .run_folder import RunFolder
    from .runs.ensemble import make_ensemble

    run_dir = make_ensemble(runs, results, tta, force)
    metrics = RunFolder(run_dir).metrics
    typer.echo(f"run folder: {run_dir}")
    for member in metrics["members"]:
        typer.echo(f"  member {member['run']}: test accuracy {member['accuracy']:.4f}, validation accuracy "
                   f"{member['best_val_accuracy']:.4f}")
    ci = metrics["accuracy_ci95"]
    typer.echo(f"ensemble of {len(metrics['members'])}: test accuracy {metrics['accuracy']:.4f} (95% CI {ci[0]:.4f}-"
               f"{ci[1]:.4f}), validation accuracy {metrics['best_val_accuracy']:.4f}, balanced accuracy "
               f"{metrics['balanced_accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, members' train time "
               f"{metrics['total_train_seconds']:.0f} s")
    if "tta" in metrics:
        typer.echo(f"with {metrics['tta']['mode']} test-time augmentation: accuracy {metrics['tta']['accuracy']:.4f}")


@app.command("compare")
def compare_command(
    sources: list[str] = typer.Argument(None, help="Run folders, folders of run folders, or an experiment name; "
                                        "default: every run in --results."),
    results: Path = typer.Option(Path("results"), help="Folder that holds run folders."),
    out: Optional[Path] = typer.Option(None, help="Where to write tables and figures (an earlier comparison there "
                                       "is moved aside, not replaced)."),
    data: Optional[Path] = typer.Option(None, help="With an experiment name: the data it was run on."),
    baseline: Optional[str] = typer.Option(None, help="The run id, or model name, every run is tested against; "
                                           "default: the seed CNN (scratch), under the seed recipe when present."),
    where: list[str] = typer.Option([], help="Only runs whose config has KEY=VALUE (comma list: any of them), "
                                    "e.g. --where model=vggnet --where data=fer2013; repeatable."),
    weights: Optional[list[str]] = typer.Option(None, help="With an experiment name: MODEL=PATH, the weights file "
                                                "its transfer runs were given (as `experiment --weights`)."),
):
    """Tabulate complete runs, one table per test set, with 95% CIs and McNemar tests against a baseline;
    writes MD, CSV, LaTeX, PNGs.

    Example: fer-bench compare results/ --where model=vggnet,scratch --out comparison"""
    from .runs.experiment import find_experiment_file, load_experiment, plan

    run_dirs, name = [], "comparison"
    for source in sources or [str(results)]:
        path = Path(source)
        if path.is_dir():
            run_dirs.append(path)
            continue
        spec = load_experiment(find_experiment_file(source), None if data is None else str(data),
                               _weights_files(weights))
        planned = plan(spec, results)
        for _, run_dir, status in planned:
            if status == "to do":
                typer.echo(f"missing (not started): {run_dir.name}")
        run_dirs += [run_dir for _, run_dir, status in planned if status != "to do"]
        name = spec.name
    _write_comparison(run_dirs, out or results / "comparisons" / name, baseline, where)


@app.command()
def predict(
    images: Optional[list[Path]] = typer.Argument(None, help="Photos (JPEG/PNG/BMP, colour or gray, any size) or "
                                                  "folders of them, or videos (mp4, avi, mov, mkv, webm)."),
    run: Optional[str] = typer.Option(None, help=f"{RUN_HELP}, or an exported .onnx/.tflite file; default: bundled."),
    results: Path = typer.Option(Path("results"), help="Where --run looks for run ids."),
    detector: str = typer.Option("blazeface", help="Face detector: blazeface (MediaPipe's, fast), mtcnn (aligned "
                                 "crops both), haar (OpenCV's cascade), or "
                                 "none (the whole image is the face)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one object per face."),
    csv: Optional[Path] = typer.Option(None, help="Also write one row per face to this CSV (default for a folder or "
                                       "several photos: predictions.csv)."),
    camera: Optional[int] = typer.Option(None, help="Video: analyse camera N (OpenCV's numbering) instead of files; "
                                         "Ctrl-C (or --seconds) ends it and writes the outputs."),
    every: Optional[int] = typer.Option(None, help="Video: analyse every N-th frame (default: 6 answers per second "
                                        "for every face)."),
    seconds: Optional[float] = typer.Option(None, help="Video: analyse only the first SECONDS."),
    smooth: float = typer.Option(0.5, help="Video: half-life in seconds of the smoothed timeline (0: none; raw "
                                 "probabilities are always kept)."),
    annotate: bool = typer.Option(False, help="Video: also write annotated.mp4 (boxes, ids, labels)."),
    out: Optional[Path] = typer.Option(None, help="Video: the output folder (default: VIDEO.fer/ beside the video; "
                                       "camera: cameraN.fer/)."),
):
    """Classify the expression of every face in each photo, or through each video, with the bundled model (or --run).

    Example: fer-bench predict photo.jpg --json"""
    from .files import write_csv
    from .serving import predict as predictor
    from .serving.predict import is_video

    if detector not in ("blazeface", "mtcnn", "haar", "none"):
        raise UserError(f"--detector must be blazeface, mtcnn, haar or none, got {detector!r}")
    videos = [Path(i) for i in images or [] if is_video(Path(i))]
    if camera is None and not images:
        raise UserError("name photos or videos to analyse, or --camera N")
    if videos or camera is not None:
        if detector == "none" or (videos and len(videos) != len(images)):
            raise UserError("videos need a face detector (blazeface, mtcnn or haar) and are analysed apart from photos")
        loaded = predictor.load_run(run, results)
        for source in videos or [camera]:
            _predict_video(loaded, source, detector, every, seconds, smooth, annotate, out)
        return
    if csv is None and (len(images) > 1 or any(Path(i).is_dir() for i in images)):
        csv = _unused_name(Path("predictions.csv"))  # never over an earlier file (a run's own, say)
    elif csv is not None:
        _check_csv_target(csv)
    loaded = predictor.load_run(run, results)
    answers = predictor.predict_files(loaded, images, detector)
    if as_json:
        typer.echo(predictor.as_json(answers))
    else:
        typer.echo(f"run: {loaded.source} ({loaded.model_name}, test accuracy {loaded.test_accuracy:.4f}); "
                   f"{loaded.calibration_note}")
        for a in answers:
            where = f"face {a.face} at [x, y, w, h] = {a.box}" if a.box else \
                "no face found: the whole image was used (the answer may be meaningless)"
            probs = ", ".join(f"{c} {v:.0%}" for c, v in sorted(a.probabilities.items(), key=lambda kv: -kv[1]))
            cautions = "".join(f"\n  note: {c}" for c in a.cautions)
            typer.echo(f"{a.file}: {where}\n  {probs}\n  {a.sentence}{cautions}")
    if csv is not None:
        write_csv(csv, predictor.answers_table(answers), index=False)
        typer.echo(f"{len(answers)} answers written to {csv}", err=as_json)


def _detector_list(spec: str) -> list[str]:
    """'blazeface,mtcnn' → the detectors, each one `predict` knows."""
    from .data.faces import DETECTORS

    names = [d.strip() for d in spec.split(",") if d.strip()]
    if not names or any(d not in DETECTORS for d in names):
        raise UserError(f"--detectors takes a comma list of {', '.join(DETECTORS)}; got {spec!r}")
    return names


def _unused_name(path: Path) -> Path:
    """`path`, or `stem-2.csv`, `stem-3.csv`, ... : the first that does not exist yet."""
    n = 1
    while path.exists() or path.is_symlink():
        n += 1
        path = path.with_name(f"{path.stem.rsplit('-', 1)[0] if n > 2 else path.stem}-{n}{path.suffix}")
    return path


def _check_csv_target(csv: Path) -> None:
    """--csv must name a file that is not a record of a complete run."""
    from .run_folder import RunFolder

    if csv.is_dir():
        raise UserError(f"--csv {csv} is a folder; name a file, e.g. {csv / 'predictions.csv'}")
    if RunFolder(csv.resolve().parent).is_complete():
        raise UserError(f"--csv {csv} is inside a complete run folder, whose records never change; name a file "
                        "elsewhere")


def _predict_video(loaded, source, detector: str, every, seconds, smooth: float, annotate: bool, out) -> None:
    """One video (a path) or camera (an index) analysed into its output folder, with progress and time left."""
    import math

    from .serving import video

    if not math.isfinite(smooth) or smooth < 0:
        raise UserError(f"--smooth must be a number of seconds, 0 or more, got {smooth}")
    target = out or (Path(f"camera{source}.fer") if isinstance(source, int) else source.with_name(source.name + ".fer"))
    terminal, last = sys.stderr.isatty(), [0.0]

    def progress(done: int, total: int | None, rate: float) -> None:
        """One updating line in a terminal; in a log, a line every 10 s."""
        if not terminal and time.monotonic() - last[0] < 10:
            return
        last[0] = time.monotonic()
        left = f", about {duration((total - done) / rate)} left" if total else ""
        line = f"frame {done}{f' of {total}' if total else ''}: {rate:.1f} frames/s{left}"
        typer.echo(f"\r{line}   " if terminal else line, err=True, nl=not terminal)

    opened = video.open_camera(source) if isinstance(source, int) else video.open_video(source)
    try:
        with video.output_folder(target, "--out" if out else "the output folder") as work:
            annotator = video.Annotator(work / "annotated.mp4", opened) if annotate else None
            try:
                analysis = video.analyse(loaded, opened, every, detector, seconds, annotator, progress)
            finally:
                if annotator is not None:
                    annotator.close()
            summary = video.write_outputs(analysis, loaded, opened, work, smooth, annotate)
    finally:
        opened.capture.release()
    if terminal:
        typer.echo("", err=True)  # end the progress line
    typer.echo(f"{opened.name}: {summary['frames_read']} frames, {summary['frames_analysed']} analysed "
               f"({summary['frames_per_second']:.1f} frames/s), model {loaded.name}")
    if summary["truncated"]:
        typer.echo(f"warning: {summary['truncated']}", err=True)
    if not summary["faces"]:
        typer.echo(summary["no_face"])
    for face in summary["faces"]:
        shares = ", ".join(f"{c} {v:.0%}" for c, v in sorted(face["share_of_time"].items(), key=lambda kv: -kv[1])
                           if v > 0)
        typer.echo(f"face {face['face']} ({face['first_seen']:.1f}-{face['last_seen']:.1f} s): mostly "
                   f"{face['dominant']} ({shares})")
    typer.echo(f"written to {target}/ ({video.OUTPUT_FILES}{', annotated.mp4' if annotate else ''})")


@app.command("evaluate")
def evaluate_command(
    run: str = typer.Argument(..., help=f"{RUN_HELP}."),
    data: Optional[list[Path]] = typer.Option(None, help="Labelled images: a data set folder or CSV (its test split; "
                                              "RAF-DB, SFEW and FER+ in their own layouts, their development part "
                                              "where the test part is absent), a folder with only test/, or one "
                                              "folder of class sub-folders; repeat it to score several (the model "
                                              "is loaded once). Default: the run's own test set, re-scored (with "
                                              "--tta) into its evaluations/."),
    classes: Optional[str] = typer.Option(None, help="Score only these of the run's classes (argmax among them)."),
    tta: str = typer.Option("none", help="Test-time augmentation: none, flip or crops."),
    test_usage: str = typer.Option("PrivateTest", help="fer2013.csv: which Usage is scored."),
    faces: str = typer.Option("off", help="off: the images are cropped faces (FER-style); detect: uncropped photos, "
                              "each face found and aligned as `predict` does."),
    detector: str = typer.Option("blazeface", help="With --faces detect: blazeface or mtcnn (as `predict`)."),
    out: Optional[Path] = typer.Option(None, help="Where evaluations go; default: <run>/evaluations "
                                          "(results/evaluations/bundled for the bundled model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline metrics as JSON (a list with several --data)."),
    results: Path = typer.Option(Path("results"), help="Where RUN is looked up as a run id."),
):
    """Score a finished run on other labelled data sets; writes metrics, per-class, confusion matrix, predictions.

    Example: fer-bench evaluate bundled --data path/to/rafdb --data path/to/sfew"""
    from .config import TTA_MODES
    from .reporting.scoring import evaluate_run
    from .run_folder import find_run
    from .serving.exported import FORMATS
    from .serving.predict import load_run, load_trained

    if tta not in TTA_MODES:
        raise UserError(f"--tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    exported = Path(run).suffix in FORMATS
    if exported and not data:
        raise UserError("an exported model is scored on labelled data: add --data")
    found = None if exported else find_run(run, results, "RUN")
    if not data:
        from .runs.finished import rescore

        if found.is_bundled or classes:
            raise UserError("--data is needed for the bundled model and with --classes")
        folder, metrics = rescore(found, tta)
        ci = metrics["accuracy_ci95"]
        typer.echo(json.dumps({**metrics, "folder": str(folder)}, indent=2) if as_json else
                   f"{found.name} on its own test set ({metrics['test_images']} images, TTA {tta}): accuracy "
                   f"{metrics['accuracy']:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}), balanced accuracy "
                   f"{metrics['balanced_accuracy']:.4f}\nwritten to {folder}")
        return
    if faces not in ("off", "detect"):
        raise UserError(f"--faces must be off or detect, got {faces!r}")
    for path in data:
        if not path.exists():
            raise UserError(f"data path does not exist: {path}")
    loaded = load_run(run) if exported else load_trained(found)
    if exported:
        out_root = out or Path(f"{run}.evaluations")
    else:
        out_root = out or (Path("results/evaluations/bundled") if found.is_bundled else found.file(found.EVALUATIONS))
    headlines = []
    for path in data:
        folder, metrics = evaluate_run(loaded, path, out_root, classes, tta, test_usage, faces, detector)
        headlines.append({**{k: metrics[k] for k in ("run", "data", "layout", "classes", "tta", "faces", "test_images",
                                                     "accuracy", "accuracy_ci95", "balanced_accuracy", "macro_f1",
                                                     "calibration", "classes_left_out")}, "folder": str(folder)})
        if not as_json:
            _echo_evaluation(loaded.source, tta, metrics, folder)
    if as_json:
        typer.echo(json.dumps(headlines[0] if len(headlines) == 1 else headlines, indent=2))


def _echo_evaluation(source: str, tta: str, metrics: dict, folder: Path) -> None:
    if metrics["restricted_to_classes"]:
        typer.echo(f"scored among {', '.join(metrics['classes'])} only (argmax restricted to these classes)")
    if metrics["classes_left_out"]:
        typer.echo(f"the data's images of {', '.join(metrics['classes_left_out'])} were left out (classes the run "
                   "does not answer)")
    ci = metrics["accuracy_ci95"]
    typer.echo(f"{source} on {metrics['data']} ({metrics['layout']}, {metrics['test_images']} images, "
               f"TTA {tta}): accuracy {metrics['accuracy']:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}), "
               f"balanced accuracy {metrics['balanced_accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    calibration = metrics["calibration"]
    temperature = calibration["temperature"]
    typer.echo(f"expected calibration error {calibration['ece_before']:.4f} raw, {calibration['ece_after']:.4f} with "
               f"the run's temperature ({'none: not calibrated' if temperature is None else f'{temperature:.3f}'})")
    if "face_detection" in metrics:
        typer.echo(f"faces: {metrics['face_detection']['photos_without_a_face']} photos without a detected face were "
                   "scored whole")
    typer.echo(f"written to {folder}")


@app.command("calibrate")
def calibrate_command(
    run: str = typer.Argument(..., help=f"{RUN_HELP}."),
    data: Optional[Path] = typer.Option(None, help="Where the run's data is now, if not where it was trained."),
    uncertain_on: Optional[list[Path]] = typer.Option(None, help="Instead: choose when the run's answers say they are "
                                                      "unsure, on these labelled development sets (repeatable; their "
                                                      "test or development parts, never a test split you report)."),
    results: Path = typer.Option(Path("results"), help="Where RUN is looked up as a run id."),
):
    """Fit the temperature of a run that has none on its validation split (runs train with one; this is
    for older runs): writes calibration.json and reliability.png. With --uncertain-on:
    the thresholds below which `predict` answers "uncertain", into uncertainty.json and uncertainty.png.

    Example: fer-bench calibrate results/RUN --uncertain-on data/rafdb --uncertain-on data/sfew"""
    from .run_folder import find_run
    from .runs.finished import calibrate_run, fit_uncertainty

    found = find_run(run, results, "RUN")
    if uncertain_on:
        record = fit_uncertainty(found, [str(p) for p in uncertain_on])
        typer.echo(f"{record['rule']}; on {', '.join(record['fitted_on'])}:")
        for name, row in record["sets"].items():
            confident = "-" if row["accuracy_confident"] is None else f"{row['accuracy_confident']:.3f}"
            typer.echo(f"  {name}: {row['confident_share']:.0%} confident, right {confident} of the time "
                       f"(all answers {row['accuracy_all']:.3f})")
        return
    summary = calibrate_run(found, None if data is None else str(data))
    typer.echo(f"temperature {summary['temperature']:.3f} (fitted on the {summary['fitted_on']}); expected "
               f"calibration error on test {summary['test_ece_before']:.4f} before, {summary['test_ece_after']:.4f} after")


@app.command("bundle")
def bundle_command(run: str = typer.Argument(..., help="A run folder or a run id in --results, to ship as the "
                                             "bundled model."),
                   results: Path = typer.Option(Path("results"), help="Where RUN is looked up as a run id.")):
    """(Maintainers) Make a complete run the model shipped inside the package (fer_bench/bundled/).

    Example: fer-bench bundle results/vggnet-all-40px-s42-49e5d87e"""
    from .run_folder import find_run
    from .runs.finished import write_bundle

    found = find_run(run, results, "RUN")
    target = write_bundle(found)
    size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
    typer.echo(f"bundled {found.name} into {target} ({size:.1f} MB)")


@app.command("export")
def export_command(
    run: str = typer.Argument(..., help=f"{RUN_HELP}."),
    format: str = typer.Option(..., "--format", help="onnx (onnxruntime) or tflite (LiteRT / TensorFlow Lite)."),
    float16: bool = typer.Option(False, "--float16", help="TFLite: weights in float16 (half the size)."),
    out: Optional[Path] = typer.Option(None, help="The exported file (default: <run id>.<format> here); its sidecar "
                                       "<file>.json is written beside it."),
    results: Path = typer.Option(Path("results"), help="Where RUN is looked up as a run id."),
):
    """Export a run's model as ONNX or TFLite, with a JSON sidecar (classes, input, temperature, thresholds),
    written only after it answered as the Keras model does on real faces of the run's test split.

    Example: fer-bench export bundled --format onnx --out fer_bench.onnx"""
    from .run_folder import find_run
    from .runs.finished import export_run

    target, sidecar = export_run(find_run(run, results, "RUN"), format, out, float16)
    parity = sidecar["parity"]
    typer.echo(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB) and {target}.json; parity on "
               f"{parity['faces']}: max |Δ probability| {parity['max_abs_difference']:.1e}, argmax agreement "
               f"{parity['argmax_agreement']:.1%}")
    if "run_computes_in" in parity:
        typer.echo(f"the run computes in {parity['run_computes_in']}; the export computes in float32 (every CPU runs "
                   f"it), up to {parity['vs_run_max_abs_difference']:.2g} apart in probability from the run's own "
                   f"answers (argmax agreement {parity['vs_run_argmax_agreement']:.1%})")


@app.command("app")
def app_command(
    run: Optional[str] = typer.Option(None, help=f"{RUN_HELP}, or an exported .onnx/.tflite file; default: bundled."),
    results: Path = typer.Option(Path("results"), help="Where --run looks for run ids."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (local only by default)."),
    port: int = typer.Option(8000),
):
    """Start the web app (Shiny for Python): upload a photo or a video, or use the camera, read the expression.

    Example: fer-bench app --port 8000"""
    from .serving.app import serve
    from .serving.predict import load_run

    loaded = load_run(run, results)
    typer.echo(f"serving {loaded.source} on http://{host}:{port}")
    serve(loaded, host, port)


@app.command("serve")
def serve_command(
    run: Optional[str] = typer.Option(None, help=f"{RUN_HELP}, or an exported .onnx/.tflite file; default: bundled."),
    results: Path = typer.Option(Path("results"), help="Where --run looks for run ids."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (local only by default)."),
    port: int = typer.Option(5005),
    token: Optional[str] = typer.Option(None, envvar="FER_BENCH_TOKEN", help="Require `Authorization: Bearer TOKEN` "
                                        "(or set FER_BENCH_TOKEN)."),
):
    """Serve an HTTP JSON API: POST /analyze (deepface's request and answer shape), /analyze/batch, GET /health.

    Example: fer-bench serve --port 5005"""
    from .serving.api import serve_api
    from .serving.predict import load_run

    loaded = load_run(run, results)
    typer.echo(f"serving {loaded.name} on http://{host}:{port} (POST /analyze, /analyze/batch; GET /health)")
    serve_api(loaded, host, port, token)


@app.command("models")
def models_command(pattern: str = typer.Argument("*", help="Shell-style filter, e.g. '*net*'.")):
    """List registered models: input sizes, parameters and FLOPs per image (7 classes, default size).

    Example: fer-bench models "*net*"
    """
    from .models import create_model, list_models, model_info
    from .models.flops import flops_per_image
    from .training.harness import count_params

    for name in list_models(pattern):
        info = model_info(name)
        built = create_model(name, 7, info.default_size, weights=None)
        params = count_params(built.full)
        width = f", width {info.default_width}" if info.default_width else ""
        typer.echo(
            f"{name:<12} {info.default_size}px (min {info.min_size}){width}, {params['trainable_params']:,} trainable / "
            f"{params['total_params']:,} params, {flops_per_image(built.full) / 1e9:.3g} GFLOPs/image — {info.description}"
        )


@app.command("benchmark")
def benchmark_command(
    train: bool = typer.Option(False, "--train", help="Time training (images/s, achieved GFLOP/s against this "
                               "machine's measured peak) instead of the frozen-feature path."),
    data: Optional[Path] = typer.Option(None, help="Feature path: dataset folder; default: embedded synthetic faces."),
    classes: str = typer.Option("happy,sad", help="Feature path: classes of the data."),
    models: Optional[str] = typer.Option(None, "--model", "--models", help="Comma list of models; default: "
                                         "vgg16,resnet50,inceptionv3 (feature path), scratch,vggnet (--train)."),
    image_size: Optional[str] = typer.Option(None, help="Comma list of input sizes; default: 244 (feature path, the "
                                             "seed's size), each model's own (--train)."),
    precision: str = typer.Option("auto", help="--train: comma list of float32, bfloat16, float16, auto; feature "
                                  "path: one of them (what the frozen base computes in)."),
    recipe: Optional[str] = typer.Option(None, help="--train: the recipe whose optimizer and augmentation are timed; "
                                         "default: strong, or seed with --against seed (both sides then train alike)."),
    against: Optional[str] = typer.Option(None, help="--train: 'seed' also times the seed's own pipeline (244 px "
                                          "resize outside the model, plain fit) and prints the speed-up."),
    images: int = typer.Option(2048, help="--train: random images per timed epoch."),
    sample: int = typer.Option(256, help="Feature path: images to time feature extraction on."),
    head_epochs: int = typer.Option(10, help="Feature path: head epochs on cached features."),
    as_json: bool = typer.Option(False, "--json", help="--train: print one JSON object per model and size."),
    out: Optional[Path] = typer.Option(None, help="Also write the table to this CSV (and a PNG beside it)."),
    video: Optional[Path] = typer.Option(None, help="Time `predict VIDEO` on this video instead: detection on every "
                                         "frame against detection every N-th frame with tracking, frames/s and "
                                         "peak memory."),
    photos: Optional[Path] = typer.Option(None, help="Time `predict FOLDER` on this folder of photos instead, one fresh "
                                          "process per detector and model: seconds, ms per photo, peak memory, "
                                          "and accuracy where photos sit in class-named subfolders."),
    detectors: str = typer.Option("blazeface,mtcnn", help="--photos, --video: comma list of the detectors to time."),
    run: Optional[list[str]] = typer.Option(None, "--run", help="--photos, --video: the model answering (as "
                                            "`predict --run`; repeat to compare models or an exported file); "
                                            "default: bundled."),
    frame_sizes: str = typer.Option("640x480,1280x720", help="--video: the frame sizes to time it at."),
    every: Optional[int] = typer.Option(None, help="--video: the scheme's stride (default: 6 answers per second)."),
    runtimes: Optional[str] = typer.Option(None, help="Time this run's model (as every command names a run) four "
                                           "ways, each in a fresh process: Keras predict, Keras predict_on_batch, "
                                           "its ONNX and TFLite exports: cold start, ms per face, memory."),
    results: Path = typer.Option(Path("results"), help="--runtimes, --run: where a run id is looked up."),
):
    """Time training against this machine's peak (--train), frozen-feature extraction and head training
    as ratios against a scratch-CNN epoch, photo folders (--photos) and video (--video) per detector and model,
    or one model's runtimes (--runtimes).

    Example: fer-bench benchmark --train --model vggnet --precision float32,bfloat16 --out bench.csv"""
    if runtimes is not None:
        import tempfile

        from .benchmarks.runtimes import runtime_benchmark
        from .run_folder import RunFolder, find_run
        from .runs.finished import export_run

        found = find_run(runtimes, results, "--runtimes")
        with tempfile.TemporaryDirectory(prefix="fer-bench-runtimes-") as folder:
            files = {fmt: export_run(found, fmt, Path(folder) / f"model.{fmt}")[0] for fmt in ("onnx", "tflite")}
            table = runtime_benchmark(found.file(RunFolder.MODEL), files, progress=typer.echo)
        typer.echo(table.to_markdown(index=False, floatfmt=".3g"))
        if out is not None:
            table.to_csv(out, index=False)
        return
    if photos is not None or video is not None:
        names = _detector_list(detectors)
        if photos is not None:
            from .benchmarks.photo_speed import photo_benchmark

            if not photos.is_dir():
                raise UserError(f"--photos must name a folder of photos, got {photos}")
            table = photo_benchmark(photos, names, run or [None], results, progress=typer.echo)
        else:
            from .benchmarks.video_speed import parse_sizes, video_benchmark

            if not video.is_file():
                raise UserError(f"video not found: {video}")
            table = video_benchmark(video, parse_sizes(frame_sizes), names, every, run or [None], results,
                                    progress=typer.echo)
        typer.echo(table.to_markdown(index=False, floatfmt=".3g"))
        if out is not None:
            from .reporting.plots import plot_answer_speed

            table.to_csv(out, index=False)
            plot_answer_speed(table, out.with_suffix(".png"))
        return

    from .models import check_image_size, model_info

    sizes = [int(v) for v in image_size.split(",")] if image_size else None
    if train:
        from .benchmarks.training_speed import train_benchmark
        from .config import PRECISIONS
        from .precision import resolve_precision

        names = [m.strip() for m in (models or "scratch,vggnet").split(",") if m.strip()]
        precisions = []
        for value in precision.split(","):
            if value not in PRECISIONS:
                raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
            precisions.append(resolve_precision(value))
        if against not in (None, "seed"):
            raise UserError(f"--against takes only 'seed', got {against!r}")
        for name in names:
            for size in sizes or [None]:
                check_image_size(model_info(name), size or model_info(name).default_size)
        recipe = recipe or ("seed" if against == "seed" else "strong")
        table = train_benchmark(names, sizes or [None], list(dict.fromkeys(precisions)), recipe, against == "seed",
                                images, progress=lambda line: typer.echo(line, err=as_json))
        if as_json:
            typer.echo(table.to_json(orient="records", indent=2))
        else:
            typer.echo(table.to_markdown(index=False, floatfmt=".3g"))
        if out is not None:
            from .reporting.plots import plot_train_benchmark

            table.to_csv(out, index=False)
            plot_train_benchmark(table, out.with_suffix(".png"))
        return
    from .benchmarks.frozen_features import benchmark
    from .config import RunConfig
    from .runs.run import load_run_data

    from .precision import resolve_precision

    names = [m.strip() for m in (models or "vgg16,resnet50,inceptionv3").split(",") if m.strip()]
    sizes = sizes or [244]
    for name in names:
        info = model_info(name)
        if not info.transfer:
            raise UserError(f"{name} is not a transfer model")
        for size in sizes:
            check_image_size(info, size)
    if "," in precision or precision not in ("auto", "float32", "bfloat16"):
        raise UserError(f"feature path: --precision takes one of auto, float32, bfloat16, got {precision!r}")
    dataset = load_run_data(RunConfig(data=None if data is None else str(data), classes=classes))
    table = benchmark(dataset, names, sizes, sample, head_epochs, progress=typer.echo,
                      precision=resolve_precision(precision))
    typer.echo(table.to_markdown(index=False, floatfmt=".3g"))
    if out is not None:
        from .reporting.plots import plot_benchmark

        table.to_csv(out, index=False)
        plot_benchmark(table, out.with_suffix(".png"))


@data_app.command("synth")
def data_synth(
    out: Path = typer.Argument(..., help="Folder to write train/<class>/*.png and test/<class>/*.png into."),
    train_per_class: int = typer.Option(400),
    test_per_class: int = typer.Option(100),
    seed: int = typer.Option(0),
):
    """Write the embedded synthetic faces in the folder layout.

    Example: fer-bench data synth synthetic_faces"""
    from .config import SEEDS, Bounds
    from .data.dataset import write_folder_layout
    from .data.synthetic import synthetic_dataset

    for key, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        Bounds(1, 100_000).check(key, value)
    SEEDS.check("seed", seed)
    _require_empty(out)
    n = write_folder_layout(synthetic_dataset(train_per_class, test_per_class, seed), out)
    typer.echo(f"wrote {n} images to {out}")


@data_app.command("scenes")
def data_scenes(path: Path = typer.Argument(..., help="A data set of aligned face crops (e.g. RAF-DB, SFEW)."),
                out: Path = typer.Argument(..., help="A new folder for the scenes (<class>/scene_NNNNN.jpg)."),
                per_class: int = typer.Option(50, help="Scenes per class (fewer where the class has fewer faces)."),
                seed: int = typer.Option(0)):
    """Paste the test (or development) part's faces into larger 640x480 photos at random sizes, places
    and tilts: uncropped, labelled photos to measure face detection with (`evaluate --faces detect`).

    Example: fer-bench data scenes path/to/rafdb rafdb_scenes --per-class 50"""
    from .config import SEEDS, Bounds
    from .data.scenes import write_scenes
    from .data.sources import open_dataset

    Bounds(1, 100_000).check("per_class", per_class)
    SEEDS.check("seed", seed)
    n = write_scenes(open_dataset(str(path), "PrivateTest"), path, out, per_class, seed)
    typer.echo(f"wrote {n} scenes to {out}")


@data_app.command("inspect")
def data_inspect(path: Path = typer.Argument(..., help="Dataset folder or fer2013.csv."),
                 test_usage: str = typer.Option("PrivateTest", help="fer2013.csv: which Usage is the test set.")):
    """Layout, images per split and class, formats, unreadable files and exact duplicates.

    Example: fer-bench data inspect path/to/fer2013"""
    from .data.integrity import inspect_lines
    from .data.sources import open_dataset

    started = time.perf_counter()
    for line in inspect_lines(open_dataset(path, test_usage)):
        typer.echo(line)
    typer.echo(f"({time.perf_counter() - started:.1f} s)")


@data_app.command("export")
def data_export(path: Path = typer.Argument(..., help="Dataset folder or fer2013.csv."),
                out: Path = typer.Argument(..., help="Empty or new folder to write <split>/<class>/*.png into."),
                test_usage: str = typer.Option("PrivateTest", help="fer2013.csv: which Usage is the test set.")):
    """Write any supported input in the folder layout, e.g. fer2013.csv as PNG folders.

    Example: fer-bench data export fer2013.csv fer2013_folders"""
    from .data.dataset import write_folder_layout
    from .data.sources import open_dataset

    _require_empty(out)
    n = write_folder_layout(open_dataset(path, test_usage), out)
    typer.echo(f"wrote {n} images to {out}")


def _require_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output folder is not empty: {out}")


def _usage_errors() -> tuple[type, ...]:
    """The exception types of a command line Typer could not parse (newer Typer carries its own Click)."""
    import click

    try:
        from typer._click.exceptions import UsageError
    except ImportError:
        return (click.UsageError,)
    return (click.UsageError, UsageError)


def main() -> None:
    """Console entry point: user errors (Typer's usage errors too) become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        code = _command_line().main(standalone_mode=False)
    except _usage_errors() as error:
        command = error.ctx.command_path if getattr(error, "ctx", None) is not None else "fer-bench"
        if error.format_message():  # (none after the help a bare `fer-bench` prints)
            typer.echo(f"error: {error.format_message()} (`{command} --help` lists the options)", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except OSError as error:  # a full disk or a read-only folder outside the atomic writes (e.g. a new run folder)
        from .files import storage_error

        problem = storage_error(error, error.filename or "a file", writing=False)
        if problem is None:
            raise
        typer.echo(f"error: {problem}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
