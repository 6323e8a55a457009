"""Every weight tag's stated parameters and multiply-adds are those of the model it builds.

As torchvision's metadata test does: the spec's numbers are recomputed from the model
in the tag's configuration (no weight file is read), and any mismatch fails.
"""

import pytest

import lightnets
from lightnets.weights import get_weights


@pytest.mark.parametrize("tag", lightnets.list_weights())
def test_spec_params_and_madds_match_the_model(tag):
    spec = get_weights(tag)
    assert spec.params is not None and spec.madds is not None, f"{tag}: params / madds not stated"
    model = lightnets.create_model(spec.model, **spec.model_kwargs)
    size = spec.transform.size
    report = lightnets.profile(model, (3, size, size))
    assert (report.params, report.madds) == (spec.params, spec.madds)


def test_spec_costs_are_in_its_dict():
    spec = get_weights(lightnets.list_weights()[0])
    assert (spec.to_dict()["params"], spec.to_dict()["madds"]) == (spec.params, spec.madds)
