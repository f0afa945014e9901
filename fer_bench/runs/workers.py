"""Local parallel workers for an experiment: J processes of `fer-bench experiment --pool`, each with
its share of the CPU cores (or one GPU each), taking the runs not complete yet largest first (a run's
lock keeps two from training it), their output relayed line by line with the worker's number in front."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path


def usable_cpus(environ=os.environ, cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may really use: the fewest of its CPU affinity, its cgroup's CPU quota and
    Slurm's SLURM_CPUS_PER_TASK (os.cpu_count() counts every CPU of the machine)."""
    limits = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)]
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            limits.append(max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    if environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        limits.append(int(environ["SLURM_CPUS_PER_TASK"]))
    return max(1, min(limits))


def worker_environment(k: int, jobs: int, gpus: int, base=os.environ) -> dict[str, str]:
    """Environment of worker k (1-based): its GPU if there are any, else its share of the usable CPUs."""
    env = dict(base)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str((k - 1) % gpus)
    threads = str(max(1, usable_cpus(base) // jobs))
    env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads)
    return env


def _relay(k: int, stream, echo) -> None:
    for line in stream:
        echo(f"[worker {k}] {line.rstrip()}")


def run_workers(experiment_file: Path, jobs: int, data: Path | None, output: Path, echo=print,
                weights: dict[str, str] | None = None) -> list[int]:
    """Start `jobs` workers sharing the grid's runs, relay their output, wait; returns exit codes."""
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    processes = []
    for k in range(1, jobs + 1):
        command = [sys.executable, "-m", "fer_bench", "experiment", str(experiment_file), "--pool",
                   "--results", str(output), "--no-compare"] + (["--data", str(data)] if data is not None else []) + [
                   f"--weights={model}={file}" for model, file in (weights or {}).items()]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                   env=worker_environment(k, jobs, gpus))
        relay = threading.Thread(target=_relay, args=(k, process.stdout, echo), daemon=True)
        relay.start()
        processes.append((process, relay))
    codes = []
    for process, relay in processes:
        codes.append(process.wait())
        relay.join()
    return codes
