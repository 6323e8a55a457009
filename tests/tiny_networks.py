"""Four tiny registered networks (name, builder arguments, input side) that calibrate a
latency table in a second, for the tests of the latency model and of the search."""

TINY_NETWORKS = (
    ("mobilenet_v1", {"width": 0.25}, 32),
    ("mobilenet_v1", {"width": 0.25}, 64),
    ("shufflenet_v1", {"groups": 1, "scale": 0.25}, 32),
    ("shufflenet_v1", {"groups": 1, "scale": 0.25}, 64),
)
