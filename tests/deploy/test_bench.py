"""lightnets bench: every backend runs and is timed in its own process; the report's parts."""

import csv

import pytest

from lightnets.cli import main
from lightnets.deploy.bench import (
    BACKENDS,
    Measurement,
    Target,
    benchmark,
    gemm_rate,
    interleaved,
    measure,
    model_targets,
    speedup_per_madds_cut,
)
from lightnets.deploy.bench_report import auto_lines, markdown_table, write_report

SMALL = ("shufflenet_v1", {"groups": 3, "scale": 0.25})


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, imagenet_sample):
    import shutil

    sample = imagenet_sample / "images"
    folder = tmp_path_factory.mktemp("calibration")
    for path in sorted(sample.iterdir())[:32]:
        shutil.copy(path, folder / path.name)
    return folder


def test_every_backend_runs_and_reports(tmp_path, calibration):
    targets = model_targets(
        SMALL[0], SMALL[1], input_size=96, calibration=calibration, workdir=tmp_path, label="tiny"
    )
    assert [t.backend for t in targets] == list(BACKENDS)
    assert all(t.madds == targets[0].madds > 0 for t in targets)
    for target in targets:
        m = measure(target, threads=1, runs=50, warmup=2, batch=4, batch_runs=2)
        assert 0 < m.latency_ms <= m.latency_p90_ms and m.throughput > 0 and m.runs == 50
        assert m.peak_memory_mb is None or m.peak_memory_mb > 0


def test_fresh_process_measurement_and_gemm_rate(tmp_path):
    (target,) = model_targets(SMALL[0], SMALL[1], backends=["ort_fp32"], input_size=64, workdir=tmp_path)
    (m,) = benchmark([target], threads=[1], runs=50, warmup=2, batch=2, progress=False)
    assert m.backend == "ort_fp32" and m.threads == 1 and m.latency_ms > 0
    rate = gemm_rate(1, size=256, repeats=3)
    assert 1e8 < rate < 1e13  # multiply-adds per second of one core


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        model_targets("squeezenet1_1", backends=["tensorrt"])
    with pytest.raises(ValueError, match="need calibration images"):
        model_targets("squeezenet1_1", backends=["ort_int8"])
    target = Target("x", "eager", 1, model="squeezenet1_1")
    with pytest.raises(ValueError, match="runs must be >= 50"):
        measure(target, threads=1, runs=10)


def fake(label, madds, latency, backend="eager", threads=1):
    return Measurement(label, backend, threads, madds, latency, latency * 1.1, 50, 8, 8 / latency * 1e3, 12.0)


def test_speedup_fit_and_report(tmp_path):
    # Latency proportional to MAdds^0.5: a 4x cut gives a 2x speed-up.
    rows = [fake(f"m{i}", 4**i * 10**6, 2.0**i) for i in range(4)]
    assert speedup_per_madds_cut(rows) == pytest.approx(2.0)
    assert speedup_per_madds_cut(rows[:1]) is None
    table = markdown_table(rows, {1: 1e9})
    assert "| m1 | eager | 1 | 4.0 | 2.00 | 2.20 | 4.00 | 0.50 |" in table
    paths = write_report(rows, {1: 1e9}, tmp_path)
    assert [p.name for p in paths] == ["bench.csv", "bench.md", "bench.png"]
    with open(paths[0]) as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert "a 4x cut in MAdds gives a 2.00x speed-up" in paths[1].read_text()


def test_auto_lines_name_the_fastest_fp32_runtime():
    rows = [
        fake("a", 10**6, 4.0, "ort_fp32"),
        fake("a", 10**6, 3.0, "litert_fp32"),
        fake("a", 10**6, 9.0, "folded"),
        fake("a", 10**6, 1.0, "ort_int8"),  # another precision: never auto's choice
        fake("b", 10**6, 2.0, "ort_fp32"),
        fake("b", 10**6, 3.0, "litert_fp32"),
    ]
    assert auto_lines(rows) == [
        "- a, 1 thread(s): auto runs litert (3.00 ms), 1.33x the speed of ONNX Runtime alone",
        "- b, 1 thread(s): auto runs onnxruntime (2.00 ms), 1.00x the speed of ONNX Runtime alone",
    ]


def test_litert_backends_time_the_exported_files(tmp_path):
    targets = model_targets(SMALL[0], SMALL[1], backends=["litert_fp32"], input_size=64, workdir=tmp_path)
    assert targets[0].file.endswith(".tflite")
    row = measure(targets[0], threads=1, runs=50, warmup=2, batch=2, batch_runs=2)
    assert row.backend == "litert_fp32" and row.latency_ms > 0


def test_bench_command(tmp_path, capsys):
    argv = ["bench", "shufflenet_v1_g8_025", "--backends", "folded,ort_fp32", "--threads", "1"]
    assert main([*argv, "--input-size", "64", "--runs", "50", "--warmup", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| shufflenet_v1_g8_025 | folded | 1 |" in out and "| shufflenet_v1_g8_025 | ort_fp32 | 1 |" in out
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert main(["bench", "no_such_net", "--threads", "1"]) == 2
    assert "neither a registered model" in capsys.readouterr().err


def test_interleaved_measures_every_target_and_the_gemm_rate(tmp_path):
    targets = model_targets(
        SMALL[0], SMALL[1], backends=["folded", "ort_fp32"], input_size=64, workdir=tmp_path
    )
    rows, rate = interleaved(targets, threads=1, runs=50, warmup=2)
    assert [m.backend for m in rows] == ["folded", "ort_fp32"]
    assert all(m.latency_ms > 0 and m.runs == 50 and m.peak_memory_mb is None for m in rows)
    assert 1e8 < rate < 1e13


def test_interleaved_timing_is_single_threaded():
    with pytest.raises(ValueError, match="for one thread"):
        interleaved([Target("x", "eager", 1, model="squeezenet1_1")], threads=2)
