"""Fire branches scaled to one range: the same network in float, equal peaks in int8's eyes."""

from __future__ import annotations

import copy

import pytest
import torch

from lightnets.deploy import calibration_files, prepare_images
from lightnets.deploy.equalize import equalize_fire_branches
from lightnets.layers import Fire
from lightnets.zoo import create_model, model_for_weights, transform_of


@pytest.fixture(scope="module")
def photos(imagenette, weights_root):
    model = model_for_weights("squeezenet1_1.gluon_npy", weights_root=weights_root).eval()
    return model, prepare_images(calibration_files(imagenette / "train", 8), transform_of(model))


def branch_peaks(model, images):
    peaks = {}
    hooks = [
        branch.register_forward_hook(
            lambda m, i, out, key=(name, side): peaks.__setitem__(key, float(out.max()))
        )
        for name, fire in model.named_modules()
        if isinstance(fire, Fire)
        for side, branch in (("1x1", fire.expand1x1), ("3x3", fire.expand3x3))
    ]
    with torch.no_grad():
        logits = model(images)
    for hook in hooks:
        hook.remove()
    return logits, peaks


def test_same_network_in_float_with_equal_branch_peaks(photos):
    model, images = photos
    before, peaks_before = branch_peaks(model, images)
    equalised = copy.deepcopy(model)
    assert equalize_fire_branches(equalised, images) == 8  # every Fire module of SqueezeNet 1.1
    after, peaks = branch_peaks(equalised, images)
    assert torch.allclose(after, before, atol=1e-3, rtol=1e-4)
    for fire in {name for name, _ in peaks}:
        assert peaks[(fire, "1x1")] == pytest.approx(peaks[(fire, "3x3")], rel=1e-4)
    # The real branches differ (else the test shows nothing): fire9's by more than a third.
    assert max(peaks_before.values()) > 0
    ratios = [
        max(peaks_before[(f, "1x1")], peaks_before[(f, "3x3")])
        / min(peaks_before[(f, "1x1")], peaks_before[(f, "3x3")])
        for f in {name for name, _ in peaks_before}
    ]
    assert max(ratios) > 1.3


def test_fire_modules_next_to_a_bypass_are_left_alone(photos):
    _, images = photos
    torch.manual_seed(0)
    model = create_model("squeezenet1_0", bypass="simple").eval()
    before = copy.deepcopy(model)
    changed = equalize_fire_branches(model, images)
    # The simple bypasses sit on fire3, 5, 7 and 9, and each other Fire module feeds one of
    # them (an addition the scale would upset): none qualifies.
    assert changed == 0
    for (name, a), (_, b) in zip(model.state_dict().items(), before.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
