"""The search tests calibrate latency tables on four tiny networks instead of twelve
full-size ones (the calibration itself is tested in tests/deploy/test_latency.py), and
share one cache, so an operator timed by one test is looked up by the next."""

import pytest

from lightnets.deploy import latency


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("search_cache")


@pytest.fixture(autouse=True)
def tiny_calibration(monkeypatch, shared_cache):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(shared_cache))
    networks = [("mobilenet_v1", {"width": 0.25}, side) for side in (32, 64)]
    networks += [("shufflenet_v1", {"groups": 1, "scale": 0.25}, side) for side in (32, 64)]
    monkeypatch.setattr(latency, "CALIBRATION_NETWORKS", tuple(networks))
