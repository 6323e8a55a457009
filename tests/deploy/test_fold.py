"""BatchNorm folding, Conv-BN-act fusion and deploy(): same logits on real images."""

import pytest
import torch
from deploy_models import FAMILY_CONFIGS, config_id, family_model, randomise_batchnorm
from torch import nn

import lightnets
from lightnets.deploy import FusedConvAct, deploy, fold_batchnorm, fuse_conv_bn_act, is_deployed
from lightnets.deploy.fold import fold_into

TOLERANCE = 1e-4  # max |logit difference|, fp32


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("config", FAMILY_CONFIGS, ids=config_id)
def test_folded_and_deployed_models_match_on_real_images(config, real_batch):
    model = family_model(config)
    images = real_batch(model)
    with torch.no_grad():
        reference = model(images)
        assert reference.abs().max() > 1e-2  # the comparison is not between near-zero logits
        folded = fold_batchnorm(model)
        assert batchnorms(folded) == 0 and folded.folded_batchnorms == batchnorms(model)
        assert (folded(images) - reference).abs().max() <= TOLERANCE
        deployed = deploy(model)
        assert (deployed(images) - reference).abs().max() <= TOLERANCE
        last = deploy(model, channels_last=True)
        out = last(images.contiguous(memory_format=torch.channels_last))
        assert (out - reference).abs().max() <= TOLERANCE
    assert batchnorms(model) > 0 or "squeezenet" in config[0]  # the original is untouched


def test_fold_is_exact_arithmetic_on_one_layer():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, bias=False), nn.BatchNorm2d(6, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.01, 5)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    x = torch.randn(2, 4, 9, 9)
    expected = bn(conv(x)).double()
    fold_into(conv, bn)
    assert conv.bias is not None
    assert torch.allclose(conv(x).double(), expected, atol=1e-5, rtol=1e-5)


def test_fold_refuses_batchnorm_without_running_statistics():
    conv, bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.raises(ValueError, match="running statistics"):
        fold_into(conv, bn)


def test_strict_fold_names_an_unfoldable_batchnorm():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1))  # no conv before the BN
    assert fold_batchnorm(model).folded_batchnorms == 0
    with pytest.raises(ValueError, match="could not be folded"):
        fold_batchnorm(model, strict=True)


def test_fusion_keeps_parameter_names_and_tf_same_padding():
    model = family_model(("mobilenet_v2", {"width": 0.35, "padding": "tf_same"}))
    fused = fuse_conv_bn_act(model)
    kinds = {type(m) for m in fused.modules()}
    assert FusedConvAct in kinds and lightnets.layers.ConvBNAct not in kinds
    kept = {k for k in fused.state_dict() if not k.endswith("conv.bias")}  # folding adds biases
    assert kept <= set(model.state_dict())  # BN entries gone, conv names kept
    stem = fused.features[0]
    assert stem.activation == "relu6" and stem.same_pad == (3, 2, 1)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max() <= TOLERANCE


def test_deploy_is_inference_only_and_keeps_the_interface():
    model = family_model(("shufflenet_v1", {"groups": 3, "scale": 0.5}))
    model.head.dropout = nn.Dropout(0.5)
    deployed = deploy(model)
    assert is_deployed(deployed) and not is_deployed(model)
    assert not any(p.requires_grad for p in deployed.parameters())
    assert not any(isinstance(m, nn.Dropout) for m in deployed.modules())
    assert deployed.num_classes == model.num_classes and deployed.model_name == "shufflenet_v1"
    with pytest.raises(RuntimeError, match="inference only"):
        deployed.train()
    deployed.eval()  # allowed
    assert deployed.forward_features(torch.randn(1, 3, 64, 64)).shape[1] == model.num_features


def test_fold_real_weights_with_tf_same_padding(weights_root, real_batch):
    model = lightnets.create_model("mobilenet_v1", weights="mobilenet_v1_025_128.tflite_uint8").eval()
    images = real_batch(model)
    with torch.no_grad():
        reference = model(images)
        assert (deploy(model)(images) - reference).abs().max() <= TOLERANCE


def test_fold_works_on_a_peer_model():
    from peers import import_torchvision

    try:
        torchvision = import_torchvision()  # torchvision.models
    except ImportError as error:
        pytest.skip(str(error))
    torch.manual_seed(0)
    peer = randomise_batchnorm(torchvision.mobilenet_v2(width_mult=0.5))
    folded = fold_batchnorm(peer, strict=True)  # torchvision's Conv2dNormActivation is a Sequential
    assert folded.folded_batchnorms == 52
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (folded(x) - peer(x)).abs().max() <= TOLERANCE
