"""The bench harness produces the rows it promises. Timings are never asserted here."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import memlab, needs_root

from memcryptor_lab.bench import run_bench
from memcryptor_lab.bench._timing import Samples, measure
from memcryptor_lab.lab import load_results

ROOT = Path(__file__).resolve().parent.parent


def test_quantiles_interpolate() -> None:
    samples = Samples((4.0, 1.0, 3.0, 2.0, 5.0), inner=1)
    assert samples.median == 3.0
    assert samples.quantile(0.0) == 1.0 and samples.quantile(1.0) == 5.0
    assert samples.quantile(0.25) == 2.0


def test_measure_calibrates_batches() -> None:
    calls = []
    result = measure(lambda: calls.append(1), samples=3, warmup=2, min_sample_s=0.001)
    assert result.inner > 1 and len(result.seconds) == 3
    assert len(calls) >= 2 + 3 * result.inner


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    run_dir, rows = run_bench(out, "smoke")
    return run_dir, rows, load_results(run_dir, table="bench")


@needs_root()
def test_every_group_is_reported(bench) -> None:
    _, _, frame = bench
    assert set(frame.group) == {
        "latency",
        "throughput",
        "scale",
        "concurrency",
        "scanner",
        "attack",
    }
    assert {"aes-gcm", "memcpy", "unix-echo"} <= set(frame.subject)


@needs_root()
def test_design_figures_carry_a_same_run_baseline_and_ratio(bench) -> None:
    _, _, frame = bench
    designs = frame[
        frame.subject.isin(["plain", "inproc-aead"]) & frame.group.isin(["latency", "throughput"])
    ]
    assert len(designs) == 2 * (2 + 2 * 2)  # seal+reveal, encrypt+decrypt at 2 sizes
    assert (designs.baseline == "aes-gcm").all()
    assert (designs.baseline_value > 0).all() and (designs.ratio > 0).all()
    assert ((designs.ratio - designs.value / designs.baseline_value).abs() < 1e-3).all()


@needs_root()
def test_skipped_rows_have_reasons_and_every_scanner_is_measured(bench) -> None:
    _, _, frame = bench
    skipped = frame[frame.status == "skipped"]
    assert set(skipped.group) <= {"concurrency"}  # only where no shared design runs
    assert (skipped.reason != "").all()
    scanner = frame[frame.subject == "needles/hyperscan"].iloc[0]
    assert scanner.goal.startswith(">= 1 GB/s") and scanner.meets_goal in ("yes", "no")
    for mode, goal in (("exact", ">= 100 MB/s"), ("tolerant", ">= 20 MB/s")):
        row = frame[frame.subject == f"aes-key-schedule/{mode}"].iloc[0]
        assert row.status == "ok" and row.value > 0 and row.samples == 3
        assert row.goal.startswith(goal) and row.meets_goal in ("yes", "no")
        assert "random data: 0 false hits" in row.reason


@needs_root()
def test_scale_rows_report_memory_and_mappings(bench) -> None:
    _, _, frame = bench
    scale = frame[frame.group == "scale"]
    assert set(scale.metric) == {
        "rss",
        "rss_per_secret",
        "locked",
        "mappings",
        "seal_time_per_secret",
        "locked_per_secret",
    }
    assert (scale[scale.metric == "mappings"].value > 10).all()


@needs_root()
def test_matrix_and_bench_share_one_run_folder(tmp_path: Path) -> None:
    memlab(
        "run",
        "--out",
        str(tmp_path),
        "--quiet",
        "--designs",
        "plain",
        "--phases",
        "at-rest",
        "--attacks",
        "proc-mem",
        "--attackers",
        "root",
        "--bench",
        "smoke",
    )
    (run_dir,) = tmp_path.iterdir()
    assert {p.name for p in run_dir.iterdir()} >= {"results.csv", "bench.csv", "meta.json"}
    meta = load_results(run_dir, table="bench").attrs["meta"]
    assert meta["status"] == "complete" and meta["bench"]["status"] == "complete"
