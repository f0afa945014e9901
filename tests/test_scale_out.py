"""Experiment shards (disjoint, covering, balanced), local parallel workers, and MirroredStrategy
over two logical CPU devices."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from fer_bench.errors import UserError
from fer_bench.runs.experiment import (
    expected_cost,
    load_experiment,
    parse_shard,
    plan,
    shard_plan,
)

GRID = """description = "scale-out test grid"
[defaults]
epochs = 1
classes = "happy,sad"
[grid]
model = ["scratch", "minixception", "vggnet"]
seed = [1, 2, 3]
"""


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "scale_grid.toml"
    path.write_text(GRID)
    return path


@pytest.mark.parametrize("n", [1, 2, 3, 4, 9, 12])
def test_shards_are_disjoint_cover_the_grid_and_balance_cost(grid_file, tmp_path, n):
    planned = plan(load_experiment(grid_file), tmp_path / "results")
    parts = shard_plan(planned, n)
    flat = [i for part in parts for i in part]
    assert sorted(flat) == list(range(len(planned)))  # every run exactly once
    assert parts == shard_plan(planned, n)
    costs = [sum(expected_cost(planned[i][0]) for i in part) for part in parts]
    biggest = max(expected_cost(cfg) for cfg, _, _ in planned)
    assert max(costs) - min(costs) <= biggest  # greedy balance: within one run's cost


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4",
                                 "SLURM_ARRAY_TASK_MIN": "1"}) == (3, 4)
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2",
                                 "SLURM_ARRAY_TASK_MIN": "0"}) == (1, 2)
    for bad in ("5/4", "0/2", "two", "slurm"):
        with pytest.raises(UserError):
            parse_shard(bad, {})


def test_dry_run_of_a_shard_lists_its_part(cli, grid_file, tmp_path):
    code, out, _ = cli("experiment", grid_file, "--dry-run", "--shard", "2/3", "--results", tmp_path / "r")
    assert code == 0 and "scale_grid: 9 runs, part 2/3: 3 of them" in out
    assert len([line for line in out.splitlines() if "to do" in line]) == 3


@pytest.mark.slow
def test_two_local_workers_complete_a_grid_and_compare_it(tmp_path):
    grid = tmp_path / "pair.toml"
    grid.write_text('[defaults]\nepochs = 1\nclasses = "happy,sad"\n[grid]\nmodel = ["scratch", "minixception"]\n'
                    'seed = [1, 2]\n')
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "fer_bench", "experiment", str(grid), "--jobs", "2", "--results", str(out)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[worker 1]" in done.stdout and "[worker 2]" in done.stdout
    table = pd.read_csv(out / "comparisons" / "pair" / "comparison.csv")
    assert len(table) == 4
    for run_dir in (p for p in out.iterdir() if (p / "complete.json").exists()):
        assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [0]


@pytest.mark.slow
def test_pool_workers_take_only_runs_neither_complete_nor_being_trained(tmp_path):
    """A worker of --jobs trains every run not complete that no other worker holds, whatever part of the
    grid was complete already (a static deal left one worker idle on a resumed grid)."""
    from fer_bench.run_folder import RunFolder

    grid = tmp_path / "pool.toml"
    grid.write_text('[defaults]\nepochs = 1\nclasses = "happy,sad"\nmodel = "scratch"\n[grid]\nseed = [1, 2, 3]\n')
    out = tmp_path / "results"
    first, held, last = (run_dir for _, run_dir, _ in plan(load_experiment(grid), out))

    def experiment(*options):
        return subprocess.run([sys.executable, "-m", "fer_bench", "experiment", str(grid), "--results", str(out),
                               *options], capture_output=True, text=True, timeout=600, env=dict(os.environ))

    with RunFolder(held).lock():  # another worker is training this one
        done = experiment("--pool", "--no-compare")
    assert done.returncode == 0, done.stdout + done.stderr
    assert RunFolder(first).is_complete() and RunFolder(last).is_complete() and not RunFolder(held).is_complete()
    assert done.stdout.count("another worker is training it, skipped") == 1
    finished = {d: (d / "complete.json").stat().st_mtime_ns for d in (first, last)}
    done = experiment("--jobs", "2")  # two workers, one run left: one trains it, none touches the others
    assert done.returncode == 0, done.stdout + done.stderr
    assert RunFolder(held).is_complete() and (out / "comparisons" / "pool" / "comparison.csv").exists()
    assert {d: (d / "complete.json").stat().st_mtime_ns for d in (first, last)} == finished
    started = [line for line in done.stdout.splitlines() if line.endswith((": running", ": resuming"))]
    assert started and all(held.name in line for line in started) and "complete, skipped" not in done.stdout
    assert done.stdout.count("another worker is training it, skipped") == len(started) - 1  # one trained it


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_learns_like_one_device(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "fer_bench", "run", "--devices", "2", "--epochs", "6", "--seed", "1",
                           "--results", str(out)], capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "MirroredStrategy over /cpu:0, /cpu:1: global batch 32, 16 per device" in done.stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["per_device_batch_size"] == 16
    assert metrics["accuracy"] >= 0.90  # the band the one-device run is held to (tests/test_run.py)
    assert json.loads((run_dir / "config.json").read_text())["devices"] == "2"


def test_workers_size_themselves_from_the_cpus_they_may_use(tmp_path):
    from fer_bench.runs.workers import usable_cpus, worker_environment

    no_quota = tmp_path / "none"
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus({}, no_quota) == affinity
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # a container limited to one CPU
    assert usable_cpus({}, quota) == 1
    quota.write_text("max 100000\n")
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "1"}, quota) == 1
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "64"}, quota) == affinity
    env = worker_environment(1, 2, 0, base={"SLURM_CPUS_PER_TASK": "1"})
    assert env["TF_NUM_INTRAOP_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "1"


def test_planning_counts_flops_once_per_machine_not_per_plan(monkeypatch):
    import fer_bench.models as models
    from fer_bench.data.dataset import cache_dir
    from fer_bench.runs import experiment

    experiment._flops.cache_clear()
    first = experiment._flops("vggnet", 16, 0.25)
    assert first > 0 and (cache_dir() / "flops.json").exists()
    experiment._flops.cache_clear()  # a new process: the FLOPs come from the cache file, no model is built
    monkeypatch.setattr(models, "create_model", lambda *a, **k: pytest.fail("built a model to count FLOPs"))
    assert experiment._flops("vggnet", 16, 0.25) == first
    experiment._flops.cache_clear()


SHARD_ON_A_MACHINE = """
import sys
from fer_bench import precision
precision.cpu_has_fast_bfloat16 = lambda *a: sys.argv[1] == "bf16"
precision.gpu_has_fast_bfloat16 = lambda: False
from fer_bench.cli import main
sys.argv = ["fer-bench", "experiment", sys.argv[2], "--results", sys.argv[3], "--dry-run", "--shard", "1/2"]
main()
"""


@pytest.mark.slow  # plans a grid twice
def test_shard_plan_is_the_same_on_every_machine_whatever_is_complete(grid_file, tmp_path):
    """Each machine plans in its own process: one whose CPU probe says AVX2, one AVX512_BF16 (strong
    recipe: precision auto), the second after a run of the grid has completed."""
    strong = tmp_path / "strong.toml"
    strong.write_text(grid_file.read_text().replace("epochs = 1", 'epochs = 1\nrecipe = "strong"'))
    results = tmp_path / "results"

    def part_one(cpu: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", SHARD_ON_A_MACHINE, cpu, str(strong), str(results)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return [line.split("  (")[0].split()[-1] for line in done.stdout.splitlines()[1:]]

    avx2 = part_one("avx2")
    assert 1 <= len(avx2) < 9
    (results / avx2[0]).mkdir(parents=True)
    (results / avx2[0] / "complete.json").write_text("{}")
    (results / avx2[0] / "config.json").write_text("{}")
    assert part_one("bf16") == avx2


def test_dry_run_estimates_time_from_the_rates_measured_here(grid_file, cli, tmp_path):
    from fer_bench.benchmarks.training_speed import RATES_FILE
    from fer_bench.data.dataset import cache_dir
    from fer_bench.runs.experiment import expected_cost, plan

    code, out, _ = cli("experiment", grid_file, "--results", tmp_path / "results", "--dry-run")
    assert code == 0 and "no time estimate yet: 9 runs without a measured rate" in out
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / RATES_FILE).write_text(json.dumps({"scratch|float32|seed": 10.0, "vggnet|float32|seed": 20.0,
                                                      "vggnet|float32|strong": 99.0}))
    code, out, _ = cli("experiment", grid_file, "--results", tmp_path / "results", "--dry-run")
    assert code == 0
    planned = plan(load_experiment(grid_file), tmp_path / "results")
    images = 800 * 0.9  # the synthetic happy/sad training images less the 10 % validation split
    expected = sum(expected_cost(cfg) * images / 1e9 / {"scratch": 10.0, "vggnet": 20.0, "minixception": 15.0}[cfg.model]
                   for cfg, _, _ in planned)
    import re

    minutes, seconds = map(int, re.search(r"estimated training time on this machine: ~(\d+)m(\d+)s", out).groups())
    assert abs(60 * minutes + seconds - expected) <= 0.1 * expected + 1, (minutes, seconds, expected)
    assert out.count("(rate of other models)") == 3  # minixception: the mean rate of the measured models


def test_transfer_runs_are_estimated_by_what_they_train_through():
    """Frozen: one feature pass at the measured peak; fine-tuned: plus its epochs through the base;
    end to end: every epoch through the base."""
    from fer_bench.benchmarks.training_speed import RATES_FILE
    from fer_bench.config import RunConfig, resolve
    from fer_bench.data.dataset import cache_dir
    from fer_bench.runs.experiment import _flops, estimated_seconds

    options = dict(model="vgg16", weights="none", image_size=32, precision="float32", epochs=10, val_split="train")
    frozen = resolve(RunConfig(**options))
    finetune = resolve(RunConfig(**options, variant="finetune", finetune_epochs=2))
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / RATES_FILE).write_text(json.dumps({"scratch|float32|seed": 10.0}))
    assert estimated_seconds(frozen) is None  # no peak measured yet: no guess
    (cache_dir() / RATES_FILE).write_text(json.dumps({"scratch|float32|seed": 10.0, "peak|float32": 200.0}))
    feature_pass = _flops("vgg16", 32, None) * (800 + 200) / 1e9 / 200.0  # every synthetic image once
    assert estimated_seconds(frozen) == (pytest.approx(feature_pass), "features at the measured peak")
    epochs = 3 * _flops("vgg16", 32, None) * 2 * 800 * 0.9 / 1e9 / 10.0  # two fine-tuning epochs, fit images
    assert estimated_seconds(finetune) == (pytest.approx(feature_pass + epochs),
                                           "features at the measured peak; rate of other models")
    full = resolve(RunConfig(**options, variant="full"))  # ten epochs through the whole base, no feature pass
    assert estimated_seconds(full) == (pytest.approx(5 * epochs), "rate of other models")
