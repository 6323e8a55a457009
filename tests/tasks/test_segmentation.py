"""Penn-Fudan as person / background, the joint augmentation, IoU, and the commands."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from lightnets.cli import main
from lightnets.tasks.metrics import ConfusionMatrix
from lightnets.tasks.segdata import (
    PENNFUDAN_VAL_141,
    VOID,
    Normalise,
    SegmentationAugment,
    pennfudan,
    pennfudan_split,
)
from lightnets.tasks.task_model import save_task_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def _annotation(objects: int) -> str:
    lines = [f'Bounding box for object {k} "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (1, 1) - (5, 5)'
             for k in range(1, objects + 1)]  # fmt: skip
    return "\n".join(["# Compatible with PASCAL Annotation Version 1.00", *lines]) + "\n"


def make_pennfudan(root: Path, photos: dict[str, tuple[tuple[int, int], np.ndarray, int]]) -> Path:
    """A Penn-Fudan folder: name -> ((width, height) of the photo, mask array, objects listed)."""
    for sub in ("PNGImages", "PedMasks", "Annotation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (size, mask, objects) in photos.items():
        photo = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(photo).save(root / "PNGImages" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8), mode="L").save(root / "PedMasks" / f"{name}_mask.png")
        (root / "Annotation" / f"{name}.txt").write_text(_annotation(objects))
    return root


def person_mask(height: int, width: int, instances: int = 1) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for k in range(1, instances + 1):
        mask[
            height // 4 : 3 * height // 4, (k - 1) * width // (instances + 1) : k * width // (instances + 1)
        ] = k
    return mask


def test_the_split_of_the_shared_copy_is_fixed(pennfudan_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        val = pennfudan(pennfudan_folder, "val")
        train = pennfudan(pennfudan_folder, "train")
    assert tuple(p.image.stem for p in val.pairs) == PENNFUDAN_VAL_141
    assert len(train) == 113 and not {p.image.stem for p in train.pairs} & set(PENNFUDAN_VAL_141)


def test_split_is_deterministic_and_disjoint():
    names = [f"P{i:03d}" for i in range(50)]
    val = pennfudan_split(names, "val")
    assert val == pennfudan_split(list(reversed(names)), "val") and len(val) == 10
    assert sorted(val + pennfudan_split(names, "train")) == names
    with pytest.raises(ValueError):
        pennfudan_split(names, "test")


def test_bad_masks_are_skipped_with_one_warning_each(tmp_path):
    root = make_pennfudan(
        tmp_path,
        {
            "Good": ((40, 30), person_mask(30, 40), 1),
            "WrongSize": ((40, 30), person_mask(20, 40), 1),
            "TooManyPeople": ((40, 30), person_mask(30, 40, instances=3), 2),
        },
    )
    with pytest.warns(UserWarning) as caught:
        data = pennfudan(root, "all")
    assert [p.image.stem for p in data.pairs] == ["Good"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert any("WrongSize_mask.png" in m and "40x20" in m for m in messages)
    assert any("TooManyPeople_mask.png" in m and "outside the classes" in m for m in messages)
    photo, classes = data.arrays(0)
    assert photo.shape == (30, 40, 3) and set(np.unique(classes)) == {0, 1}


def test_augmentation_moves_photo_and_mask_together():
    # A photo whose red pixels are exactly the person's: after scaling, cropping and
    # flipping, the mask must still cover the red pixels and nothing else.
    height, width = 60, 80
    mask = person_mask(height, width)
    photo = np.zeros((height, width, 3), np.uint8)
    photo[mask > 0] = (255, 0, 0)
    augment = SegmentationAugment(48, Normalise((0, 0, 0), (1, 1, 1)), scale=(0.6, 1.6), jitter=0, seed=1)
    for _ in range(20):
        image, target = augment(photo, mask)
        assert image.shape == (3, 48, 48) and target.shape == (48, 48)
        labelled = target != VOID
        red = image[0] > 127
        agree = (red == (target == 1))[labelled].float().mean()
        assert agree > 0.97  # resampling blurs the border pixels only


def test_iou_pools_pixels_and_ignores_void():
    confusion = ConfusionMatrix(2)
    label = torch.tensor([[0, 0, 1, 1, VOID]])
    prediction = torch.tensor([[0, 1, 1, 1, 1]])
    confusion.update(prediction, label)
    background, person = confusion.iou()
    assert background == pytest.approx(1 / 2) and person == pytest.approx(2 / 3)
    assert confusion.miou() == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert confusion.pixel_accuracy() == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        confusion.update(torch.tensor([0]), torch.tensor([2]))


@pytest.fixture()
def tiny_weights(tmp_path) -> Path:
    torch.manual_seed(0)
    model = lightnets.create_model("deeplabv3_mobilenet_v2", num_classes=2, width=0.35).eval()
    return save_task_weights(
        model,
        tmp_path / "tiny.safetensors",
        "deeplabv3_mobilenet_v2",
        {"width": 0.35},
        ("background", "person"),
        64,
    )


def test_weights_file_rebuilds_the_model(tiny_weights):
    model = lightnets.create_model("deeplabv3_mobilenet_v2", weights=tiny_weights)
    assert model.num_classes == 2 and model.pretrained_cfg.categories == ["background", "person"]
    assert model.pretrained_cfg.transform.size == 64


def test_segment_command_writes_overlays_and_masks(tiny_weights, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((50, 70, 3), 128, np.uint8)).save(photos / "street.jpg")
    out = tmp_path / "out"
    assert (
        main(["segment", str(photos), "--weights", str(tiny_weights), "--out", str(out), "--format", "json"])
        == 0
    )
    (record,) = json.loads(capsys.readouterr().out)
    mask = Image.open(out / "street_mask.png")
    overlay = Image.open(out / "street_overlay.png")
    assert mask.size == overlay.size == (70, 50) and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) <= {0, 1}
    assert set(record["share"]) == {"background", "person"}


def test_eval_task_segmentation(tiny_weights, tmp_path, capsys):
    root = make_pennfudan(tmp_path / "pf", {f"P{i}": ((40, 30), person_mask(30, 40), 1) for i in range(5)})
    code = main(["eval", "--task", "segmentation", "--data", str(root), "--split", "all",
                 "--weights", str(tiny_weights), "--format", "json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 5 and set(out["iou"]) == {"background", "person"}
    assert 0 <= out["miou"] <= 1


def test_lightnets_train_task_segmentation_writes_weights_and_a_summary(tmp_path, cli):
    root = make_pennfudan(tmp_path / "pf", {f"P{i}": ((48, 40), person_mask(40, 48), 1) for i in range(10)})
    code, out, err = cli("train", "--task", "segmentation", "--model", "deeplabv3_mobilenet_v2", "--width", "0.35",
                         "--data", root, "--out", tmp_path / "run", "--resolution", 32, "--batch-size", 2,
                         "--time-budget", "3s", "--threads", 1, "--format", "json")  # fmt: skip
    assert code == 0, err
    assert "no --backbone-weights" in err
    summary = json.loads(out)
    assert summary["steps"] >= 1 and summary["val_images"] == 2
    assert summary["run"]["minutes"] == 0.05 and summary["run"]["model_kwargs"] == {"width": 0.35}
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == summary["steps"]
    model = lightnets.create_model("deeplabv3_mobilenet_v2", weights=summary["weights"])
    assert model.num_classes == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "segmentation", "--model", "deeplabv3_mobilenet_v2", "--teacher", "mobilenet_v2"],
         "--task segmentation does not take --teacher"),
        (["--task", "segmentation", "--model", "mobilenet_v2"], "mobilenet_v2 is not a segmentation model"),
        (["--task", "segmentation", "--model", "deeplabv3_mobilenet_v2", "--resume"],
         "continues the run as it was set: drop --data, --model"),
        (["--task", "segmentation", "--model", "deeplabv3_mobilenet_v2", "--batch-size", "0"], "batch_size=0"),
        (["--task", "segmentation", "--model", "deeplabv3_mobilenet_v2", "--num-classes", "3"], "--num-classes"),
        (["--model", "mobilenet_v2", "--freeze-stride", "8"], "--freeze-stride: options of --task segmentation and detection only"),
    ],
)  # fmt: skip
def test_lightnets_train_task_segmentation_refuses_what_it_does_not_do(tmp_path, cli, argv, message):
    code, _, err = cli("train", "--data", tmp_path, "--out", tmp_path / "run", *argv)
    assert code == 2 and message in err, err
    assert not (tmp_path / "run").exists()
