"""Property tests: for any width, resolution, group count or scale, the model builds,
classifies at the right shape, and the analyser agrees with the papers' closed forms."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lightnets
from lightnets.cost import profile
from lightnets.layers import make_divisible
from lightnets.models import mobilenet_v1 as v1
from lightnets.models import mobilenet_v2 as v2
from lightnets.models import shufflenet_v1 as sh
from lightnets.models import squeezenet as sq

FAST = settings(max_examples=12, deadline=None)
widths = st.sampled_from([0.25, 0.35, 0.5, 0.6, 0.75, 0.9, 1.0, 1.1, 1.3, 1.4, 1.75, 2.0])
resolutions = st.integers(min_value=64, max_value=256)


def down(size: int) -> int:
    """Output side of a 3x3 (or 1x1 avg-pool 3x3) layer at stride 2 with padding 1."""
    return (size - 1) // 2 + 1


def check_forward(model, resolution: int, classes: int) -> None:
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, resolution, resolution)).shape == (1, classes)


@FAST
@given(width=widths, resolution=resolutions, classes=st.integers(1, 50))
def test_mobilenet_v1_closed_form(width, resolution, classes):
    model = lightnets.create_model("mobilenet_v1", width=width, num_classes=classes)
    report = profile(model, (3, resolution, resolution))
    side = down(resolution)
    channels = make_divisible(32 * width)
    madds, params = 27 * channels * side**2, 27 * channels
    for _, stride, out in v1.BODY:
        out = make_divisible(out * width)
        side = down(side) if stride == 2 else side
        # separable: D_K^2 * M * D_F^2 + M * N * D_F^2
        madds += 9 * channels * side**2 + channels * out * side**2
        params += 9 * channels + channels * out
        channels = out
    madds += channels * classes
    params += channels * classes + classes
    assert (report.madds, report.params) == (madds, params)
    if resolution <= 128:
        check_forward(model, resolution, classes)


@FAST
@given(width=widths, resolution=resolutions, expansion=st.sampled_from([1, 2, 3, 4, 6, 8]))
def test_mobilenet_v2_closed_form(width, resolution, expansion):
    model = lightnets.create_model("mobilenet_v2", width=width, expansion=expansion)
    report = profile(model, (3, resolution, resolution))
    side = down(resolution)
    channels = make_divisible(32 * width)
    madds, params = 27 * channels * side**2, 27 * channels
    for t, c, n, s in v2.BOTTLENECKS:
        t = expansion if t != 1 else 1
        out = make_divisible(c * width)
        for i in range(n):
            hidden = make_divisible(channels * t) if t != 1 else channels
            if hidden != channels:
                madds += channels * hidden * side**2
                params += channels * hidden
            side = down(side) if (i == 0 and s == 2) else side
            madds += 9 * hidden * side**2 + hidden * out * side**2
            params += 9 * hidden + hidden * out
            channels = out
    head = 1280 if width <= 1 else make_divisible(1280 * width)
    madds += channels * head * side**2 + head * 1000
    params += channels * head + head * 1000 + 1000
    assert (report.madds, report.params) == (madds, params)
    assert model.num_features == max(1280, head)
    if resolution <= 96:
        check_forward(model, resolution, 1000)


@FAST
@given(
    groups=st.sampled_from([1, 2, 3, 4, 8]),
    scale=st.sampled_from([0.25, 0.5, 0.75, 1.0, 1.5, 2.0]),
    resolution=resolutions,
)
def test_shufflenet_v1_closed_form(groups, scale, resolution):
    model = lightnets.create_model("shufflenet_v1", groups=groups, scale=scale)
    report = profile(model, (3, resolution, resolution))
    stem, stages = sh.stage_channels(groups, scale)
    side = down(resolution)
    madds, params = 27 * stem * side**2, 27 * stem
    side = down(side)  # max pool
    channels = stem
    for stage, ((out, bottleneck), repeats) in enumerate(zip(stages, sh.STAGE_REPEATS, strict=True)):
        for i in range(repeats):
            g1 = 1 if stage == 0 and i == 0 else groups
            branch = out - channels if i == 0 else out
            madds += channels // g1 * bottleneck * side**2  # 1x1 group conv
            params += channels // g1 * bottleneck
            side = down(side) if i == 0 else side
            madds += 9 * bottleneck * side**2 + bottleneck // groups * branch * side**2
            params += 9 * bottleneck + bottleneck // groups * branch
            channels = out
    madds += channels * 1000
    params += channels * 1000 + 1000
    assert (report.madds, report.params) == (madds, params)
    if resolution <= 96:
        check_forward(model, resolution, 1000)


@FAST
@given(
    base_e=st.sampled_from([64, 128, 256]),
    incr_e=st.sampled_from([0, 64, 128]),
    freq=st.integers(1, 4),
    pct3x3=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
    sr=st.sampled_from([0.125, 0.25, 0.5, 0.75, 1.0]),
    resolution=st.integers(min_value=64, max_value=240),
)
def test_squeezenet_design_space_closed_form(base_e, incr_e, freq, pct3x3, sr, resolution):
    model = lightnets.create_model(
        "squeezenet1_0", base_e=base_e, incr_e=incr_e, freq=freq, pct3x3=pct3x3, sr=sr, num_classes=10
    )
    report = profile(model, (3, resolution, resolution))
    side = (resolution - 7) // 2 + 1
    madds, params, channels = 49 * 3 * 96 * side**2, 49 * 3 * 96 + 96, 96
    rows = iter(sq.fire_rows(base_e, incr_e, freq, pct3x3, sr))
    for row in sq.SQUEEZENET_1_0[1:]:
        if row == sq.POOL:
            side = math.ceil((side - 3) / 2) + 1
            continue
        s, e1, e3 = next(rows)
        madds += (channels * s + s * e1 + 9 * s * e3) * side**2
        params += channels * s + s + s * e1 + e1 + 9 * s * e3 + e3
        channels = e1 + e3
    madds += channels * 10 * side**2
    params += channels * 10 + 10
    assert (report.madds, report.params) == (madds, params)
