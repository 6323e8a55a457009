"""Time budgets, the fast defaults (bfloat16 detection, image cache) and SqueezeNet training."""

import json
import math
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from tiny_runs import tiny_config

import lightnets
from lightnets.cpu import cpu_flags
from lightnets.data.images import UnreadableImage
from lightnets.layers import ConvBNAct
from lightnets.train import TrainConfig, train
from lightnets.train.cache import build_cache, square
from lightnets.train.config import parse_duration
from lightnets.train.hardware import auto_amp
from lightnets.train.init import (
    CLASS_SCORE_BIAS,
    classifier_layer,
    has_normalisation,
    has_residual_sums,
    norm_free_init,
    unit_scale,
)
from lightnets.train.recipes import (
    LRSchedule,
    fitted_ema_decay,
    norm_free_settings,
    progressive_resolutions,
    resized_cost,
    steps_fitting,
)
from lightnets.train.trainer import NotLearningWarning, Trainer


def epoch_losses(out) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["train_loss"] for r in map(json.loads, lines) if r["kind"] == "epoch"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("1.5h", 5400), ("300", 300), (" 2 min ", 120)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-3m", "0s", "nan", "inf"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_bf16_is_detected_from_the_cpu_flags_not_assumed(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert "avx512_bf16" in cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == set()
    import lightnets.train.hardware as hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert hardware.auto_amp("cpu", "float32") == "bf16"
    assert hardware.auto_amp("cpu", "float64") == "off"
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert hardware.auto_amp("cpu", "float32") == "off"
    assert auto_amp("cuda", "float32") == "fp16"


def test_budget_schedule_keeps_the_probe_steps_and_fits_the_warm_up():
    long = LRSchedule(
        0.1, steps_per_epoch=100, epochs=1, warmup_epochs=1.0, total_steps=10**9, probe_steps=10
    )
    probe = [long.lr_at(s) for s in range(10)]
    short = LRSchedule(0.1, steps_per_epoch=100, epochs=1, warmup_epochs=1.0, total_steps=200, probe_steps=10)
    # The steps taken before the length was known keep their rates; the warm-up shrinks
    # to a fifth of the run and reaches the peak; the run ends at zero.
    assert [short.lr_at(s) for s in range(10)] == probe
    assert short.warmup_steps == 40
    assert short.lr_at(40) == pytest.approx(0.1)
    assert all(short.lr_at(s) < short.lr_at(s + 1) for s in range(39))
    assert short.lr_at(200) == pytest.approx(0.0, abs=1e-12)
    # A run long enough keeps the whole warm-up.
    full = LRSchedule(0.1, steps_per_epoch=100, epochs=1, warmup_epochs=1.0, total_steps=5000, probe_steps=10)
    assert full.warmup_steps == 100 and full.lr_at(50) == pytest.approx(long.lr_at(50))
    assert fitted_ema_decay(1000) == pytest.approx(0.99)
    assert fitted_ema_decay(20) == 0.9 and fitted_ema_decay(10**7) == 0.9998


def test_norm_free_networks_get_their_initialisation_and_recipe():
    torch.manual_seed(0)
    squeezenet = lightnets.create_model("squeezenet1_1", num_classes=10)
    assert not has_normalisation(squeezenet)
    assert has_normalisation(lightnets.create_model("mobilenet_v2", width=0.35, num_classes=10))
    norm_free_init(squeezenet)
    assert classifier_layer(squeezenet).weight.std().item() == pytest.approx(0.01, rel=0.1)
    squeezenet.eval()
    with torch.no_grad():
        features = squeezenet.forward_features(torch.randn(4, 3, 96, 96))
    # He's initialisation keeps the features' scale; Xavier's would shrink it ~100-fold.
    assert 0.3 < features.std().item() < 10
    settings = norm_free_settings("sgd", 64)
    assert settings["lr"] == pytest.approx(0.01) and settings["warmup_epochs"] >= 2


@pytest.mark.parametrize("bypass", ["simple", "complex"])
def test_bypassed_squeezenet_starts_at_the_scale_of_the_plain_one(bypass):
    """He's initialisation alone lets every bypass sum double the signal (features ~12 and
    ~128 here); the unit-scale pass brings them back to the plain network's range."""
    torch.manual_seed(0)
    squeezenet = lightnets.create_model("squeezenet1_1", bypass=bypass, num_classes=10)
    assert has_residual_sums(squeezenet)
    assert not has_residual_sums(lightnets.create_model("squeezenet1_1", num_classes=10))
    norm_free_init(squeezenet)
    squeezenet.eval()
    with torch.no_grad():
        features = squeezenet.forward_features(torch.randn(4, 3, 96, 96))
    assert 0.3 < features.std().item() < 3
    # On the noise it is scaled on, every unit's output has a unit second moment.
    unit_scale(squeezenet, torch.Generator().manual_seed(1), side=64, images=8)
    noise = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    units = [m for m in squeezenet.modules() if isinstance(m, ConvBNAct)]
    second_moments = {}
    for unit in units:
        unit.register_forward_hook(lambda u, i, o: second_moments.__setitem__(u, o.pow(2).mean().item()))
    with torch.no_grad():
        squeezenet(noise)
    assert len(second_moments) == len(units)
    body = [v for u, v in second_moments.items() if u is not units[-1]]
    assert body == pytest.approx([1.0] * len(body), rel=1e-3)
    assert classifier_layer(squeezenet).bias.eq(CLASS_SCORE_BIAS).all()


@pytest.mark.parametrize("bypass", [None, "complex"])
def test_squeezenet_loss_falls_under_the_default_recipe(bypass, tiny_imagenette, tmp_path, one_thread):
    data = tiny_imagenette(classes=3, train=16, val=2)
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotLearningWarning)
        train(
            tiny_config(
                data, out, model="squeezenet1_1", model_kwargs={"bypass": bypass}, epochs=12, batch_size=8,
                resolution=64,
                crop_scale=1.0, hflip=0.0, log_every=0, threads=None,
            )
        )  # fmt: skip
    losses = epoch_losses(out)
    assert min(losses[-3:]) < math.log(3) - 0.05, losses
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == pytest.approx(0.4 * 0.1 * 8 / 256) and config["clip_grad"] == 5.0


def test_a_run_that_does_not_learn_says_so(tiny_imagenette, tmp_path, one_thread):
    data = tiny_imagenette(classes=2, train=8, val=1)
    config = TrainConfig(
        model="squeezenet1_1", data=str(data), out=str(tmp_path / "run"), epochs=8, batch_size=4,
        resolution=48, progress=False,
    )  # fmt: skip
    trainer = Trainer(config, _one_process())
    try:
        trainer.step = trainer.schedule.warmup_steps + 1
        with warnings.catch_warnings():
            warnings.simplefilter("error", NotLearningWarning)
            trainer._check_learning(math.log(2))  # still in the first steps after the warm-up
        trainer.step += 10
        trainer._check_learning(0.5)  # learning: no warning, and the check is done
        assert trainer.not_learning_checked
        trainer.not_learning_checked = False
        with pytest.warns(NotLearningWarning, match=r"not learning.*--lr"):
            trainer._check_learning(math.log(2) + 0.001)
    finally:
        trainer.close()


def test_image_cache_serves_the_decoded_pixels(tiny_imagenette, tmp_path):
    from lightnets.train.data import open_source

    data = tiny_imagenette(classes=2, train=3, val=1)
    broken = data / "train" / sorted(p.name for p in (data / "train").iterdir())[0] / "zz_broken.JPEG"
    broken.write_bytes(b"not a JPEG")
    source = open_source(data, "train")
    indices = list(range(len(source)))
    cached, spent = build_cache(source, indices, 40, tmp_path / "cache", "train")
    again, spent_again = build_cache(source, indices, 40, tmp_path / "cache", "train")
    assert spent > 0 and spent_again == 0.0
    for index in indices:
        if source.name_of(index).endswith("zz_broken.JPEG"):
            with pytest.raises(UnreadableImage, match="zz_broken"):
                again.image(index)
            continue
        expected = square(source.image(index), 40)
        assert np.array_equal(np.asarray(again.image(index)), expected)
        assert isinstance(cached.image(index), Image.Image)
    assert [p.suffix for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")] == []


def test_budgeted_run_reports_its_budget_and_recommends_weights(tiny_imagenette, tmp_path, one_thread):
    data = tiny_imagenette(classes=2, train=8, val=2)
    out = tmp_path / "run"
    result = train(tiny_config(data, out, time_budget=60, eval_resolution=40, threads=None))
    summary = json.loads((out / "summary.json").read_text())
    budget = summary["budget"]
    assert budget["budget_s"] == 60 and budget["steps"] == result.steps > 10
    for key in ("start_up_s", "caching_s", "training_s", "evaluation_s", "images_per_s"):
        assert budget[key] >= 0, key
    assert summary["schedule"]["replay"] == f"--steps {result.steps}"
    assert summary["recommended"]["holds"] in ("the EMA of the weights", "the last weights")
    assert summary["execution"]["precision"] in ("float32", "bfloat16 autocast")
    assert summary["eval_resolution"] == 40
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        assert '"size": 40' in handle.metadata()["lightnets"].replace(" ", " ")
    model = lightnets.create_model("mobilenet_v2", weights=str(out / "model.safetensors"))
    assert model.pretrained_cfg.transform.size == 40


@pytest.mark.parametrize("sizes", [{}, {"resolution": 48, "start_resolution": 32}])
def test_a_run_that_slows_down_plans_again_and_keeps_its_budget(
    tiny_imagenette, tmp_path, one_thread, monkeypatch, sizes
):
    """The machine gets slower after the probe (another job starts): a run that kept its
    first plan would take several times its budget; re-planned, it ends near it (with
    progressive resizing too, whose later steps cost more than the probe's)."""
    data = tiny_imagenette(classes=2, train=8, val=2)
    out = tmp_path / "run"
    step = Trainer.train_step

    def slower_after_the_plan(self, batch):
        if "planned_at_step" in self.budget_log:
            time.sleep(0.03)
        return step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", slower_after_the_plan)
    started = time.perf_counter()
    train(tiny_config(data, out, time_budget=12, threads=None, **sizes))
    took = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget"]["replans"] >= 1 and summary["schedule"]["replay_exact"] is False
    assert took < 12 * 1.3, took


def test_a_longer_plan_after_the_warm_up_keeps_the_warm_up_where_it_ended():
    schedule = LRSchedule(0.1, 100, 10, warmup_epochs=5, total_steps=500, probe_steps=10)
    assert schedule.warmup_steps == 100 and schedule.lr_at(120) > 0.09
    schedule.fixed_warmup_steps = schedule.warmup_steps  # what a re-plan does
    schedule.total_steps = 600  # the run turned out faster: a longer plan
    assert schedule.warmup_steps == 100 and schedule.lr_at(105) > 0.099  # decaying, not warming up again
    assert LRSchedule(0.1, 100, 10, warmup_epochs=5, total_steps=600, probe_steps=10).lr_at(105) < 0.09


def test_progressive_resizing_ramps_in_steps_of_16_then_holds_the_final_size():
    sizes = progressive_resolutions(np.arange(1000), 1000, 96, 160)
    assert sizes[0] == 96 and set(sizes[750:]) == {160}
    assert np.all(np.diff(sizes) >= 0) and set(sizes) == {96, 112, 128, 144, 160}
    assert set(progressive_resolutions(np.arange(10), 10, None, 128)) == {128}


def test_a_budget_buys_more_steps_when_the_early_ones_are_smaller():
    plain = steps_fitting(0, 100.0, 0.1, None, 128)
    assert plain == 1000
    resized = steps_fitting(0, 100.0, 0.1, 64, 128)
    assert resized > plain
    assert resized_cost(0, resized, resized, 64, 128) * 0.1 <= 100.0
    assert resized_cost(0, resized + 1, resized + 1, 64, 128) * 0.1 > 100.0
    assert steps_fitting(500, -5.0, 0.1, 64, 128) == 501  # out of time: one more step, not fewer


def test_a_run_resizes_its_batches_progressively(tiny_imagenette, tmp_path, one_thread):
    data = tiny_imagenette(classes=2, train=4, val=1)
    seen = []
    trainer = Trainer(
        tiny_config(data, tmp_path / "run", epochs=2, batch_size=2, resolution=64, start_resolution=32),
        _one_process(),
    )
    try:
        trainer.model.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[-1], m.training)))
        trainer.run()
    finally:
        trainer.close()
    # 8 images, batch 2, 2 epochs: 8 steps, the ramp over the first 6 (32 + 32 * step / 6,
    # down to a multiple of 16), then 64; the evaluations see the full size.
    assert [size for size, training in seen if training] == [32, 32, 32, 48, 48, 48, 64, 64]
    assert {size for size, training in seen if not training} == {64}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["start_resolution"] == 32 and summary["resolution"] == 64


def test_a_start_resolution_must_be_below_the_final_one_and_fit_the_model(tiny_imagenette, tmp_path):
    with pytest.raises(ValueError, match="--start-resolution 128 must be below --resolution 128"):
        tiny_config(tmp_path, tmp_path / "run", resolution=128, start_resolution=128)
    data = tiny_imagenette(classes=2, train=2, val=1)
    with pytest.raises(ValueError, match="--start-resolution 16 does not fit mobilenet_v2: .* at least 32"):
        train(tiny_config(data, tmp_path / "run", resolution=64, start_resolution=16))


def test_replaying_a_budgeted_run_with_steps(tiny_imagenette, tmp_path, one_thread):
    data = tiny_imagenette(classes=2, train=8, val=1)
    common = dict(
        model="mobilenet_v2", model_kwargs={"width": 0.35}, data=str(data), batch_size=4, resolution=32,
        progress=False,
    )  # fmt: skip
    trainer = Trainer(TrainConfig(**common, out=str(tmp_path / "a"), steps=7), _one_process())
    try:
        assert trainer.budgeted and not trainer.planning and trainer.schedule.total == 7
        assert trainer.total_epochs == 2 and trainer.ema.decay == 0.9
    finally:
        trainer.close()


def _one_process():
    from lightnets.train import distributed

    return distributed.setup("cpu")


def test_run_without_eval_resolution_evaluates_at_the_test_resolution(tiny_imagenette, tmp_path):
    data = tiny_imagenette(classes=2, train=4, val=2)
    train(tiny_config(data, tmp_path / "run", steps=1, resolution=48))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_resolution"] == 64  # 1.25 x 48 on the 32-pixel grid
