"""Recipes: parameter groups, schedules, TensorFlow's RMSprop, EMA, keyed dropout, fine-tuning."""

import itertools
import math

import pytest
import torch
from torch import nn

import lightnets
from lightnets.train import LRSchedule, ModelEMA, RMSpropTF, parameter_groups
from lightnets.train.config import TrainConfig
from lightnets.train.dropout import KeyedDropout, sample_keys, set_dropout_keys, use_keyed_dropout
from lightnets.train.finetune import freeze_backbone, set_train_mode
from lightnets.train.mixing import Mixing
from lightnets.train.recipes import default_eval_resolution, is_depthwise, recipe_defaults


def test_no_weight_decay_on_depthwise_filters_batchnorm_and_biases():
    model = lightnets.create_model("mobilenet_v2", width=0.35, num_classes=10)
    groups = parameter_groups(model, 4e-5)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            expected = not (p.ndim <= 1 or is_depthwise(module) or isinstance(module, nn.BatchNorm2d))
            assert (id(p) in decayed) == expected, (module, name)
    depthwise = [m for m in model.modules() if is_depthwise(m)]
    assert len(depthwise) == 17 and all(id(m.weight) not in decayed for m in depthwise)
    assert id(model.head.fc.weight) in decayed and id(model.head.fc.bias) not in decayed
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_backbone_learning_rate_scale_and_frozen_backbone():
    model = lightnets.create_model("mobilenet_v2", width=0.35, num_classes=10)
    groups = parameter_groups(model, 4e-5, backbone_lr_scale=0.1)
    scales = {g["name"]: g["lr_scale"] for g in groups}
    assert scales == {
        "backbone/decay": 0.1,
        "backbone/no_decay": 0.1,
        "head/decay": 1.0,
        "head/no_decay": 1.0,
    }
    trainable = freeze_backbone(model)
    assert trainable == 1280 * 10 + 10
    assert {g["name"] for g in parameter_groups(model, 4e-5)} == {"head/decay", "head/no_decay"}
    set_train_mode(model, frozen_backbone=True)
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.head.training


def test_paper_schedule_decays_098_per_epoch_and_cosine_warms_up():
    paper = LRSchedule(0.045, steps_per_epoch=10, epochs=5, kind="exponential")
    assert paper.lr_at(0) == paper.lr_at(9) == 0.045
    assert paper.lr_at(10) == pytest.approx(0.045 * 0.98)
    assert paper.lr_at(45) == pytest.approx(0.045 * 0.98**4)
    cosine = LRSchedule(0.1, steps_per_epoch=10, epochs=11, kind="cosine", warmup_epochs=1)
    assert cosine.lr_at(0) == pytest.approx(0.001)
    assert cosine.lr_at(10) == pytest.approx(0.1)
    assert cosine.lr_at(60) == pytest.approx(0.05)
    assert cosine.lr_at(110) == pytest.approx(0.0, abs=1e-12)


def test_one_cycle_rises_for_30_percent_then_anneals_with_the_momentum_against_it():
    one = LRSchedule(0.1, steps_per_epoch=10, epochs=10, kind="onecycle", warmup_epochs=5)
    assert one.warmup_steps == 30  # 30 % of the run, whatever warmup_epochs says
    assert one.lr_at(0) == pytest.approx(0.1 / 25) and one.momentum_at(0) == pytest.approx(0.95)
    assert one.lr_at(15) == pytest.approx((0.1 + 0.1 / 25) / 2) and one.momentum_at(15) == pytest.approx(0.9)
    assert one.lr_at(30) == pytest.approx(0.1) and one.momentum_at(30) == pytest.approx(0.85)
    assert one.lr_at(100) == pytest.approx(0.1 / 25 / 1e4) and one.momentum_at(100) == pytest.approx(0.95)
    lrs = [one.lr_at(s) for s in range(101)]
    steps = [b - a for a, b in itertools.pairwise(lrs)]
    assert all(d > 0 for d in steps[:30]) and all(d < 0 for d in steps[30:])
    assert LRSchedule(0.1, steps_per_epoch=10, epochs=10).momentum_at(5) is None
    # apply() moves SGD's and RMSprop's momentum and Adam's first beta; cosine leaves them be.
    weight = nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    adam = torch.optim.AdamW([weight], lr=0.1, betas=(0.9, 0.999))
    one.step = 15
    assert one.apply(sgd) == pytest.approx(one.lr_at(15))
    one.apply(adam)
    assert sgd.param_groups[0]["momentum"] == pytest.approx(0.9)
    assert adam.param_groups[0]["betas"] == (pytest.approx(0.9), 0.999)
    one.step = 30
    one.apply(sgd)
    assert sgd.param_groups[0]["momentum"] == pytest.approx(0.85)
    LRSchedule(0.1, steps_per_epoch=10, epochs=10).apply(sgd)
    assert sgd.param_groups[0]["momentum"] == pytest.approx(0.85)
    with pytest.raises(ValueError, match="unknown schedule 'one-cycle'.*onecycle"):
        LRSchedule(0.1, steps_per_epoch=10, epochs=10, kind="one-cycle")


def test_mixup_and_cutmix_blend_images_and_weigh_labels_by_the_share_kept():
    images = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 16, 16).contiguous()
    mixup = Mixing(mixup=0.4)
    mixed, partner, lam = mixup.mix(images, seed=3, step=5)
    assert sorted(partner.tolist()) == list(range(8)) and 0 <= lam <= 1
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[partner])
    # The same seed, step and process draw the same mix (a resumed run mixes alike); another step does not.
    again, partner_again, lam_again = mixup.mix(images, seed=3, step=5)
    assert torch.equal(again, mixed) and torch.equal(partner_again, partner) and lam_again == lam
    assert mixup.mix(images, seed=3, step=6)[2] != lam
    assert mixup.mix(images, seed=3, step=5, rank=1)[2] != lam
    cutmix = Mixing(cutmix=1.0)
    for step in range(20):
        mixed, partner, lam = cutmix.mix(images, seed=0, step=step)
        moved = partner != torch.arange(8)
        kept = (mixed == images).all(dim=1).float().mean(dim=(1, 2))  # share of each image's own pixels
        # lam is exactly the share of pixels each image keeps (the box is clipped at the border).
        assert torch.allclose(kept[moved], torch.full_like(kept[moved], lam)), (step, kept, lam)
        assert torch.isin(mixed, images[:, :1, :1, :1].flatten()).all()
    both = Mixing(mixup=0.2, cutmix=1.0)
    kinds = set()
    for step in range(20):
        mixed, partner, lam = both.mix(images, seed=0, step=step)
        kinds.add("cutmix" if torch.isin(mixed, images[:, :1, :1, :1].flatten()).all() else "mixup")
    assert kinds == {"mixup", "cutmix"}
    assert not Mixing().on and Mixing(cutmix=0.5).on


def test_mixing_options_are_checked():
    with pytest.raises(ValueError, match=r"--mixup must be a number >= 0 \(0: off\), got -0.2"):
        TrainConfig(model="mobilenet_v2", data="d", out="o", mixup=-0.2)
    with pytest.raises(ValueError, match="--mixup / --cutmix and --teacher exclude each other"):
        TrainConfig(model="mobilenet_v2", data="d", out="o", cutmix=1.0, teacher="mobilenet_v2")


def test_recipe_defaults():
    assert recipe_defaults("paper", 96) == {
        "optimizer": "rmsprop",
        "lr": 0.045,
        "weight_decay": 4e-5,
        "schedule": "exponential",
        "warmup_epochs": 0.0,
        "label_smoothing": 0.0,
        "ema_decay": 0.0,
    }
    assert recipe_defaults("sgd", 512)["lr"] == pytest.approx(0.2)
    config = TrainConfig(model="m", data="d", out="o", recipe="paper", lr=0.01).resolved()
    assert (config.optimizer, config.lr, config.lr_decay) == ("rmsprop", 0.01, 0.98)


def test_rmsprop_tf_is_tensorflows_update():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([p], lr=0.1, decay=0.9, momentum=0.9, eps=1.0, weight_decay=0.01)
    ms = torch.ones(2)
    mom = torch.zeros(2)
    value = p.detach().clone()
    for grad in (torch.tensor([0.5, 1.0]), torch.tensor([-0.2, 3.0])):
        p.grad = grad.clone()
        opt.step()
        g = grad + 0.01 * value
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + 0.1 * g / torch.sqrt(ms + 1.0)
        value = value - mom
        assert torch.allclose(p.detach(), value, atol=1e-7)


def test_ema_averages_weights_with_a_warm_up():
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = ModelEMA(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    first = 1 - min(0.99, 2 / 11)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), first))
    state = ema.state_dict()
    other = ModelEMA(nn.Linear(2, 1, bias=False), decay=0.5)
    other.load_state_dict(state)
    assert other.updates == 1 and other.decay == 0.99 and torch.equal(other.module.weight, ema.module.weight)


def test_keyed_dropout_masks_depend_on_the_image_not_the_batch():
    model = use_keyed_dropout(nn.Sequential(nn.Identity(), nn.Dropout(0.5)))
    assert isinstance(model[1], KeyedDropout)
    model.train()
    x = torch.ones(4, 64)
    keys = sample_keys(0, 7, [10, 11, 12, 13])
    set_dropout_keys(model, keys)
    whole = model(x)
    set_dropout_keys(model, keys[2:])
    part = model(x[2:])
    assert torch.equal(whole[2:], part)
    assert set(whole.unique().tolist()) == {0.0, 2.0}
    assert not torch.equal(whole[0], whole[1])
    assert sample_keys(0, 8, [10]) != sample_keys(0, 7, [10])
    model.eval()
    assert torch.equal(model(x), x)


def test_warm_up_fraction_of_an_epoch():
    schedule = LRSchedule(1.0, steps_per_epoch=4, epochs=2, kind="constant", warmup_epochs=0.5)
    assert [schedule.lr_at(s) for s in range(4)] == pytest.approx([0.01, 0.505, 1.0, 1.0])
    assert not math.isnan(schedule.lr_at(100))


def test_default_test_resolution_is_a_quarter_larger_on_the_32_pixel_grid():
    # Random-resized crops down to 8 % of the area: test larger than trained.
    assert [default_eval_resolution(side, 0.08) for side in (32, 96, 128, 160, 224)] == [
        32,
        128,
        160,
        192,
        288,
    ]
    # Crops that keep most of the photo do not zoom in: test as trained.
    assert default_eval_resolution(128, 0.5) == 128
