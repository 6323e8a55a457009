"""The search tests calibrate latency tables on four tiny networks instead of twelve
full-size ones (the calibration itself is tested in tests/deploy/test_latency.py), and
share one cache, so an operator timed by one test is looked up by the next."""

import pytest
from tiny_networks import TINY_NETWORKS

from lightnets.deploy import latency


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("search_cache")


@pytest.fixture(autouse=True)
def tiny_calibration(monkeypatch, shared_cache):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(shared_cache))
    monkeypatch.setattr(latency, "CALIBRATION_NETWORKS", TINY_NETWORKS)
