"""A real one-node Slurm cluster on 127.0.0.1 (Debian's slurm-wlm and munge, started here) runs
the shipped array script over a small synthetic grid; `compare` then holds every run, each
trained exactly once. Skips only where Slurm is not installed or we are not root."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARRAY_SCRIPT = ROOT / "examples" / "slurm" / "array.sbatch"
DAEMONS = ("munged", "slurmctld", "slurmd")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("sbatch", "slurmctld", "slurmd", "munged")) or os.geteuid() != 0,
    reason="needs Debian's slurm-wlm and munge, run as root (.ci/run installs them)",
)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _munge_works() -> bool:
    encoded = subprocess.run(["munge", "-n"], capture_output=True)
    return encoded.returncode == 0 and subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True).returncode == 0


def _start_munge() -> None:
    if _munge_works():
        return
    for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge", "/etc/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", "munge:munge", folder], check=True)
    if not Path("/etc/munge/munge.key").exists():
        subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True)
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
    for _ in range(50):
        if _munge_works():
            return
        time.sleep(0.1)
    raise RuntimeError("munged did not start")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """slurmctld + slurmd for this machine on free loopback ports; yields the environment to submit with."""
    _start_munge()
    home = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname()
    conf = home / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=ferbenchtest", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"StateSaveLocation={home}/state", f"SlurmdSpoolDir={home}/spool",
        f"SlurmctldPidFile={home}/slurmctld.pid", f"SlurmdPidFile={home}/slurmd.pid",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "SchedulerType=sched/backfill", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU", "ReturnToService=2", "MpiDefault=none",
        f"SlurmctldLogFile={home}/slurmctld.log", f"SlurmdLogFile={home}/slurmd.log",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
        f"PartitionName=test Nodes={host} Default=YES MaxTime=60 State=UP",
    ]) + "\n")
    (home / "state").mkdir()
    (home / "spool").mkdir()
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
    subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
    try:
        for _ in range(100):
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the Slurm node did not come up: {state!r}\n{(home / 'slurmctld.log').read_text()[-2000:]}")
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
        for daemon in ("slurmd", "slurmctld"):
            pid_file = home / f"{daemon}.pid"
            if pid_file.exists():
                subprocess.run(["kill", pid_file.read_text().strip()], capture_output=True)


def test_slurm_array_runs_every_run_of_a_grid_exactly_once(slurm_cluster, tmp_path):
    grid = tmp_path / "tiny_grid.toml"
    grid.write_text('description = "2 models x 2 seeds, 1 epoch"\n[defaults]\nepochs = 1\nclasses = "happy,sad"\n'
                    '[grid]\nmodel = ["scratch", "minixception"]\nseed = [1, 2]\n')
    results = tmp_path / "results"
    env = {**slurm_cluster, "EXPERIMENT": str(grid), "RESULTS": str(results), "FER_BENCH_CACHE": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--wait", "--array=1-2", "--cpus-per-task=1", f"--output={tmp_path}/task-%a.out",
         str(ARRAY_SCRIPT)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    logs = {p.name: p.read_text() for p in sorted(tmp_path.glob("task-*.out"))}
    print(submitted.stdout, submitted.stderr, *logs.values(), sep="\n")  # shown by pytest on failure, and with -s
    assert submitted.returncode == 0, logs
    assert set(logs) == {"task-1.out", "task-2.out"}
    assert all("array task" in log for log in logs.values())

    compared = subprocess.run([sys.executable, "-m", "fer_bench", "compare", str(grid), "--results", str(results)],
                              capture_output=True, text=True, env=env, timeout=300)
    assert compared.returncode == 0, compared.stderr
    assert "missing" not in compared.stdout
    table = pd.read_csv(results / "comparisons" / "tiny_grid" / "comparison.csv")
    assert len(table) == 4 and sorted(zip(table["model"], table["seed"])) == [
        ("minixception", 1), ("minixception", 2), ("scratch", 1), ("scratch", 2)]
    run_dirs = [p for p in results.iterdir() if (p / "complete.json").exists()]
    assert len(run_dirs) == 4
    for run_dir in run_dirs:  # each trained once: one epoch in its history, never resumed
        assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [0]
        assert json.loads((run_dir / "complete.json").read_text())["resumed"] is False
    started = [line for log in logs.values() for line in log.splitlines() if line.endswith(": running")]
    assert len(started) == 4 and len({line.split("] ")[1] for line in started}) == 4
