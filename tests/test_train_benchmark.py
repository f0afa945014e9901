"""`fer-bench benchmark --train`: throughput against the measured peak, and the seed-style pipeline."""

import json

import pandas as pd
import pytest

from fer_bench.benchmarks import training_speed


def test_train_benchmark_reports_rates_peaks_and_the_seed_ratio(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(training_speed, "SEED_SIZE", 32)  # the seed's 244 px costs minutes; the path is the same
    code, out, err = cli("benchmark", "--train", "--model", "scratch,vggnet", "--image-size", "16",
                         "--precision", "float32", "--images", "64", "--against", "seed", "--json",
                         "--out", tmp_path / "train.csv")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["model"], r["image_size"], r["precision"]) for r in rows] == [("scratch", 16, "float32"),
                                                                             ("vggnet", 16, "float32")]
    assert {r["recipe"] for r in rows} == {"seed"}  # against the seed, both sides train the seed recipe
    for r in rows:
        assert r["images_per_second"] > 0 and r["peak_gflops"] > 0
        assert r["achieved_gflops"] == pytest.approx(r["images_per_second"] * r["train_gflops_per_image"])
        assert r["peak_fraction"] == pytest.approx(r["achieved_gflops"] / r["peak_gflops"])
        assert r["speedup"] == pytest.approx(r["images_per_second"] / r["seed_images_per_second"])
    assert "peak (float32): matmul" in err
    assert len(pd.read_csv(tmp_path / "train.csv")) == 2 and (tmp_path / "train.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (("--precision", "int8"), "--precision must be one of"),
    (("--against", "tensorflow"), "--against takes only 'seed'"),
    (("--model", "scratch", "--image-size", "4"), "too small for scratch"),
])
def test_train_benchmark_bad_options_are_one_line(cli, args, message):
    code, _, err = cli("benchmark", "--train", *args)
    assert code == 2 and message in err
