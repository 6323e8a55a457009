"""The latency model: a network's operators, their lookup table, its cache."""

import json

import numpy as np
import pytest
import torch
from tiny_networks import TINY_NETWORKS
from torch import nn

from lightnets import create_model
from lightnets.deploy import auto, latency
from lightnets.deploy.latency import Calibration, LatencyTable, network_operators


def test_operators_fuse_activations_and_share_keys_between_equal_blocks():
    ops = network_operators(create_model("mobilenet_v2", width=0.35), (3, 96, 96))
    kinds = [op.kind for op in ops]
    # 52 convolutions (ReLU6 fused into them), 10 shortcut additions, the pool and the classifier.
    assert kinds.count("pointwise") + kinds.count("depthwise") + kinds.count("conv") == 52
    assert kinds.count("add") == 10 and kinds.count("fully connected") == 1
    assert "activation" not in kinds  # every ReLU6 runs inside its convolution
    # Repeated bottlenecks with equal shapes are one entry of the table.
    assert len({op.key for op in ops}) < len(ops)
    first = ops[0]
    assert first.input_shapes == ((1, 3, 96, 96),) and "stride=(2, 2)" in first.key


def test_operators_of_shufflenet_and_squeezenet_include_shuffle_and_concat():
    shuffle = {op.kind for op in network_operators(create_model("shufflenet_v1", scale=0.5), (3, 64, 64))}
    assert {"shuffle", "concat", "group conv", "pool"} <= shuffle
    assert "concat" in {op.kind for op in network_operators(create_model("squeezenet1_1"), (3, 64, 64))}


def test_each_operator_graph_computes_what_the_network_does():
    model = create_model("shufflenet_v1", scale=0.5).eval()
    ops = network_operators(model, (3, 64, 64))
    op = next(o for o in ops if o.kind == "shuffle")
    x = torch.randn(*op.input_shapes[0])
    channels = x.shape[1]
    expected = x.unflatten(1, (3, channels // 3)).transpose(1, 2).flatten(1, 2)
    assert torch.equal(op.module(x), expected)


def test_untraceable_model_is_refused_by_name():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # data-dependent control flow

    with pytest.raises(ValueError, match="torch.fx can trace; Branchy"):
        network_operators(Branchy(), (3, 8, 8))


def test_table_times_missing_operators_once_and_keeps_them(tmp_path, one_thread):
    path = tmp_path / "table.json"
    model = create_model("mobilenet_v1", width=0.25)
    table = LatencyTable("folded", 1, path=path)
    prediction = table.predict(model, (3, 64, 64), calibrated=False)
    assert prediction.latency_ms == prediction.raw_ms > prediction.overhead_ms > 0
    assert len(prediction.operators) == len(network_operators(model, (3, 64, 64)))
    assert sum(prediction.by_kind().values()) == pytest.approx(prediction.latency_ms - prediction.overhead_ms)
    stored = json.loads(path.read_text())
    assert stored["key"]["backend"] == "folded" and len(stored["operators"]) == len(table.entries)

    reread = LatencyTable("folded", 1, path=path)
    reread_prediction = reread.predict(model, (3, 64, 64), calibrated=False)  # nothing is timed again
    assert reread_prediction.latency_ms == pytest.approx(prediction.latency_ms)
    assert reread.missing(network_operators(model, (3, 64, 64))) == []


def test_calibration_relates_sums_to_whole_networks_and_is_kept(tmp_path, one_thread):
    path = tmp_path / "table.json"
    table = LatencyTable("folded", 1, path=path)
    calibration = table.calibrate(TINY_NETWORKS)
    assert LatencyTable("folded", 1, path=path).calibration == calibration
    model = create_model("mobilenet_v1", width=0.25)
    prediction = table.predict(model, (3, 48, 48))
    assert prediction.calibration == calibration
    total = sum(ms for _, _, ms in prediction.operators)
    expected = max(calibration.apply(total, len(prediction.operators)), prediction.overhead_ms)
    assert prediction.latency_ms == pytest.approx(expected)
    with pytest.raises(ValueError, match="needs 4 or more networks, got 2"):
        table.calibrate(TINY_NETWORKS[:2])


@pytest.mark.slow  # ONNX exports of four networks: half a minute
def test_the_first_prediction_calibrates_the_table(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(latency, "CALIBRATION_NETWORKS", TINY_NETWORKS)
    table = LatencyTable("ort_fp32", 1, path=tmp_path / "table.json")
    prediction = table.predict(create_model("shufflenet_v1", groups=1, scale=0.25), (3, 48, 48))
    assert table.calibration is not None and prediction.calibration == table.calibration
    assert prediction.latency_ms > 0


def test_a_table_made_on_another_machine_is_not_used(tmp_path, monkeypatch):
    path = tmp_path / "table.json"
    table = LatencyTable("folded", 1, path=path)
    table.entries, table.overhead_ms = {"an operator": 1.0}, 0.01
    table.save()
    assert LatencyTable("folded", 1, path=path).entries == {"an operator": 1.0}
    monkeypatch.setattr(auto, "cpu_model", lambda: "another CPU")
    assert LatencyTable("folded", 1, path=path).entries == {}


def test_a_stored_calibration_is_fitted_again_if_negative_or_timed_another_way(tmp_path):
    path = tmp_path / "table.json"
    table = LatencyTable("folded", 1, path=path)
    table.entries, table.overhead_ms = {"an operator": 1.0}, 0.01
    table.calibration = Calibration(1.0, 0.01, 0.2, 0.05)
    table.save()
    assert LatencyTable("folded", 1, path=path).calibration == table.calibration
    table.calibration = Calibration(1.0, 0.01, -0.4, 0.05)
    table.save()
    assert LatencyTable("folded", 1, path=path).calibration is None
    table.calibration = Calibration(1.0, 0.01, 0.2, 0.05)
    table.save()
    stored = json.loads(path.read_text())
    path.write_text(json.dumps(stored | {"calibration_method": "median of 7 calls"}))
    reread = LatencyTable("folded", 1, path=path)
    assert reread.calibration is None and reread.entries == {"an operator": 1.0}


def test_onnxruntime_times_one_operator_whole_and_by_its_kernels(one_thread):
    conv = nn.Conv2d(8, 8, 3, padding=1)
    assert latency._time_onnxruntime(conv, ((1, 8, 16, 16),), 1) > 0
    assert latency._kernel_time_onnxruntime(conv, ((1, 8, 16, 16),), 1) > 0


def test_bad_backend_and_threads_are_refused():
    with pytest.raises(ValueError, match="unknown latency backend 'tvm'"):
        LatencyTable("tvm")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        LatencyTable("folded", 0)


def test_calibration_keeps_every_coefficient_non_negative():
    # Timings that grow faster than the sums: a free fit gives the constant -0.5 ms and
    # would predict any network below 0.5 ms of operators at zero.
    rows = [(total, 20, 1.2 * total - 0.5) for total in (1.0, 2.0, 4.0, 8.0)]
    free, *_ = np.linalg.lstsq(np.array([[t, c, 1.0] for t, c, _ in rows]), [m for *_, m in rows], rcond=None)
    assert free[2] < 0 or free[1] < 0
    calibration = Calibration.fit(rows)
    assert min(calibration.scale, calibration.per_operator, calibration.constant) >= 0
    assert calibration.apply(0.2, 20) > 0
    # Timings a non-negative calibration explains exactly are fitted exactly.
    exact = [(t, n, 1.1 * t + 0.01 * n + 0.2) for t, n in ((1.0, 10), (2.0, 30), (3.0, 20), (5.0, 50))]
    fitted = Calibration.fit(exact)
    assert (fitted.scale, fitted.per_operator, fitted.constant) == pytest.approx((1.1, 0.01, 0.2))
    assert fitted.median_error == pytest.approx(0.0, abs=1e-9)
    # The plain sum is kept where it explains the rows better than any fit.
    plain = [
        (t, n, t + 0.05 + (0.3 if n == 99 else 0.0)) for t, n in ((1.0, 10), (2.0, 30), (3.0, 20), (9.0, 99))
    ]
    kept = Calibration.fit(plain, overhead_ms=0.05)
    assert (kept.scale, kept.per_operator, kept.constant, kept.median_error) == (1.0, 0.0, 0.05, 0.0)
