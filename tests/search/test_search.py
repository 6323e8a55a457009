"""lightnets search: the space, the accuracy curve, the front, the bounds and resuming."""

import importlib
import json
import math

import pytest

from lightnets import create_model
from lightnets.cost import profile
from lightnets.search import (
    AccuracyModel,
    Candidate,
    Constraints,
    Evaluated,
    candidates,
    pareto_front,
    search,
)
from lightnets.search.accuracy import paper_points, spearman
from lightnets.search.proxy import proxy_train, run_folder, spread

search_module = importlib.import_module("lightnets.search.search")  # the package's `search` is the function


def test_every_candidate_builds_as_described():
    pool = candidates()
    assert len(pool) == len(set(pool)) == 350
    for candidate in pool[::37]:
        model = candidate.build()
        assert type(model) is type(create_model(candidate.model, **candidate.options))
    assert candidates(["mobilenet_v2"], [128])[0].label == "mobilenet_v2(width=0.35, expansion=4.0) @128"
    with pytest.raises(ValueError, match="unknown search family 'resnet'"):
        candidates(["resnet"])


def test_spearman_counts_ranks_and_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert math.isnan(spearman([1, 1], [1, 2]))


def test_the_accuracy_curve_ranks_configurations_it_did_not_see():
    model = AccuracyModel.from_papers()
    assert {p.family for p in model.points} == {"mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "squeezenet"}
    held_back = model.leave_one_out()
    assert len(held_back) >= 15
    rho = spearman([p.top1 for p, _ in held_back], [q for _, q in held_back])
    assert rho > 0.85
    assert sum(abs(p.top1 - q) for p, q in held_back) / len(held_back) < 3.0  # points of top-1
    v2 = next(p for p in paper_points() if p.family == "mobilenet_v2" and p.top1 == 72.0)
    assert model.predict("mobilenet_v2", v2.madds)[0] == pytest.approx(72.0, abs=1.5)
    small, extrapolated = model.predict("shufflenet_v1", 1_000_000)
    assert extrapolated and small < model.predict("shufflenet_v1", 13_000_000)[0]


def _row(cost: float, top1: float) -> Evaluated:
    return Evaluated(Candidate("mobilenet_v2", (), 96), {"madds": cost}, top1)


def test_pareto_front_keeps_the_rows_nothing_beats():
    rows = [_row(10, 50), _row(20, 49), _row(20, 55), _row(30, 60), _row(40, 58), _row(5, 40)]
    front = pareto_front(rows, "madds")
    assert [(r.costs["madds"], r.predicted_top1) for r in front] == [(5, 40), (10, 50), (20, 55), (30, 60)]


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="--max-latency must be a positive number"):
        Constraints(latency_ms=0)


def test_search_keeps_what_fits_and_draws_the_front(tmp_path):
    result = search(
        Constraints(madds=10e6), families=["shufflenet_v1"], resolutions=[96], backend="folded", out=tmp_path
    )
    assert result.space_size == 25 and 0 < len(result.front) <= len(result.fitting) < 25
    for row in result.fitting:
        assert row.costs["madds"] <= 10e6
    for row in result.front:  # every cost of the front is given, and it rebuilds exactly
        assert set(row.to_dict()) >= {
            "model",
            "kwargs",
            "resolution",
            "madds",
            "params",
            "peak_memory",
            "latency_ms",
        }
        model = create_model(row.candidate.model, **row.to_dict()["kwargs"])
        assert (
            profile(model, (3, row.candidate.resolution, row.candidate.resolution)).madds
            == row.costs["madds"]
        )
    tops = [r.predicted_top1 for r in result.front]
    assert tops == sorted(tops)


def test_a_search_resumes_from_its_state(tmp_path, monkeypatch):
    bounds = Constraints(madds=20e6, params=1e6)
    first = search(bounds, families=["mobilenet_v1"], resolutions=[96], backend="folded", out=tmp_path)

    def no_computing(*args):
        raise AssertionError("a cost the state holds was computed again")

    monkeypatch.setattr(search_module.CostEvaluator, "_compute", no_computing)
    again = search(bounds, families=["mobilenet_v1"], resolutions=[96], backend="folded", out=tmp_path)
    assert [r.to_dict() for r in again.front] == [r.to_dict() for r in first.front]
    # A line cut short by a kill is skipped, not fatal.
    with (tmp_path / "evaluated.jsonl").open("a") as handle:
        handle.write('{"key": "mobilenet_v1(width=0.25')
    search(bounds, families=["mobilenet_v1"], resolutions=[96], backend="folded", out=tmp_path)


def test_nothing_fits_names_the_smallest_network():
    with pytest.raises(ValueError) as error:
        search(Constraints(madds=1e3), families=["shufflenet_v1", "mobilenet_v1"], resolutions=[96])
    message = str(error.value)
    assert "no network in the search space meets --max-madds 1K" in message
    assert "the fewest MAdds: shufflenet_v1(groups=1, scale=0.25) @96" in message


def test_contradictory_bounds_name_the_fastest_within_the_others(tmp_path):
    with pytest.raises(ValueError, match=r"of the \d+ within the other bounds, the fastest: "):
        search(
            Constraints(madds=10e6, latency_ms=1e-4), families=["mobilenet_v1"], resolutions=[96],
            backend="folded", out=tmp_path,
        )  # fmt: skip


def test_search_command_json_rebuilds_every_network(cli, tmp_path):
    code, out, err = cli(
        "search", "--max-madds", "15M", "--families", "mobilenet_v2", "--resolutions", "96",
        "--backend", "folded", "--format", "json", "--out", tmp_path, "--quiet", "--plot", tmp_path / "front.png",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)  # the plot's note goes to standard error
    assert rows and (tmp_path / "front.png").stat().st_size > 0 and "front.png" in err
    for row in rows:
        assert row["madds"] <= 15e6 and row["latency_ms"] > 0 and row["peak_memory"] > 0
        model = create_model(row["model"], **row["kwargs"])
        assert profile(model, (3, row["resolution"], row["resolution"])).params == row["params"]


def test_search_command_table_and_refusals(cli, tmp_path):
    code, out, _ = cli("search", "--max-params", "0.3M", "--families", "shufflenet_v1", "--resolutions", "96",
                       "--backend", "folded", "--out", tmp_path, "--quiet")  # fmt: skip
    assert code == 0 and "shufflenet_v1" in out and "rank correlation" in out
    code, _, err = cli("search", "--max-madds", "50X")
    assert code == 2 and "'50X' is not an amount" in err
    code, _, err = cli("search", "--max-madds", "50M", "--train", tmp_path / "absent")
    assert code == 2 and "absent: no such folder" in err
    code, _, err = cli("search", "--max-madds", "10", "--families", "mobilenet_v1", "--resolutions", "96",
                       "--out", tmp_path, "--quiet")  # fmt: skip
    assert code == 2 and "the fewest MAdds: mobilenet_v1(width=0.25, variant=shallow) @96" in err


def test_proxy_training_scores_the_front_and_reuses_finished_runs(tiny_imagenette, tmp_path):
    data = tiny_imagenette(classes=2, train=32, val=4)  # one batch of 64
    result = search(
        Constraints(madds=3e6), families=["shufflenet_v1"], resolutions=[96], backend="folded", out=tmp_path
    )
    picked = spread(result.front, 1)
    assert picked == [result.front[-1]]
    proxy_train(picked, str(data), 15.0, tmp_path, progress=False)
    assert 0.0 <= picked[0].proxy_top1 <= 100.0
    summary = run_folder(tmp_path, picked[0]) / "summary.json"
    assert summary.is_file()
    picked[0].proxy_top1 = None
    before = summary.stat().st_mtime_ns
    proxy_train(picked, str(data), 15.0, tmp_path, progress=False)  # read back, not trained again
    assert picked[0].proxy_top1 is not None and summary.stat().st_mtime_ns == before


def test_squeezenet_bypass_is_searched_and_predicted_by_the_papers_table(tmp_path):
    model = AccuracyModel.from_papers()
    madds = profile(create_model("squeezenet1_1"), (3, 224, 224)).madds
    plain = model.predict("squeezenet", madds)[0]
    assert model.predict("squeezenet", madds, {"bypass": "simple"})[0] - plain == pytest.approx(60.4 - 57.5)
    # A choice no paper reports (the default written out) gets no offset.
    v1 = profile(create_model("mobilenet_v1"), (3, 224, 224)).madds
    assert model.predict("mobilenet_v1", v1, {"variant": "separable"}) == model.predict("mobilenet_v1", v1)

    result = search(
        Constraints(madds=60e6), families=["squeezenet1_1"], resolutions=[96], backend="folded", out=tmp_path
    )
    assert result.space_size == 27 and result.front
    kinds = {r.candidate.options.get("bypass") for r in result.fitting}
    assert kinds == {None, "simple", "complex"}
    # A simple bypass costs no multiply-adds and the paper credits it with 2.9 points,
    # so no network without one is on the front.
    for row in result.front:
        assert row.candidate.options.get("bypass") is not None
        assert row.costs["latency_ms"] > 0 and row.costs["peak_memory"] > 0
