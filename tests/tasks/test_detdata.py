"""Detection data: Penn-Fudan boxes, YOLO folders, COCO JSON, and what bad labels get."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightnets.tasks.detdata import (
    DetectionAugment,
    DetectionResize,
    checked_boxes,
    coco_boxes,
    collate_detection,
    pennfudan_boxes,
    yolo_boxes,
)
from lightnets.tasks.segdata import PENNFUDAN_VAL_141, Normalise


def _photo(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(path)
    return path


@pytest.mark.filterwarnings("error")  # the shared copy has no bad box
def test_pennfudan_boxes_share_the_segmentation_split(pennfudan_folder):
    val, every = (pennfudan_boxes(pennfudan_folder, split) for split in ("val", "all"))
    assert [item.image.stem for item in val.items] == list(PENNFUDAN_VAL_141)
    assert val.classes == ["person"] and len(every) == 141 and every.boxes == 354
    # FudanPed00005.txt: "(188, 59) - (320, 336)": 1-based inclusive pixels -> corners.
    assert val.items[0].boxes[0].tolist() == [187.0, 58.0, 320.0, 336.0]
    # Each box holds its pedestrian's mask pixels.
    item = every.items[0]
    mask = np.asarray(
        Image.open(pennfudan_folder / "PennFudanPed" / "PedMasks" / f"{item.image.stem}_mask.png")
    )
    for k, (x1, y1, x2, y2) in enumerate(item.boxes, start=1):
        ys, xs = np.nonzero(mask == k)
        assert x1 <= xs.min() and xs.max() < x2 and y1 <= ys.min() and ys.max() < y2


def test_coco128_pairs_by_stem_and_a_missing_label_file_means_no_objects(coco128_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = yolo_boxes(coco128_folder)
    assert len(data) == 128 and len(data.classes) == 80
    empty = {item.image.stem for item in data.items if len(item.classes) == 0}
    assert {"000000000250", "000000000508"} <= empty
    photo, boxes, classes = data[0]
    assert boxes.shape == (len(classes), 4) and (boxes[:, 2:] <= photo.size).all()


def test_yolo_folder_reads_names_and_converts_boxes(tmp_path):
    _photo(tmp_path / "images" / "a.jpg", (100, 50))
    _photo(tmp_path / "images" / "b.jpg", (100, 50))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    data = yolo_boxes(tmp_path)
    assert data.classes == ["cat", "dog"] and len(data) == 2
    assert data.items[0].boxes.tolist() == [[40.0, 15.0, 60.0, 35.0]] and data.items[0].classes.tolist() == [
        1
    ]
    assert len(data.items[1].classes) == 0


@pytest.mark.filterwarnings("ignore:skipping .*broken.jpg")
def test_an_unreadable_photo_is_dropped_before_training_with_one_warning(tmp_path):
    _photo(tmp_path / "images" / "a.jpg")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "broken.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    with pytest.warns(UserWarning, match="skipping .*broken.jpg: cannot be read") as caught:
        data = yolo_boxes(tmp_path)
    assert len(caught) == 1 and [item.image.name for item in data.items] == ["a.jpg"]
    # A photo whose header reads but whose pixels do not: dropped when the run decodes them.
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.jpg")
    whole = (tmp_path / "noise.jpg").read_bytes()
    (tmp_path / "images" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    data = yolo_boxes(tmp_path)
    assert len(data) == 2
    with pytest.warns(UserWarning, match="skipping .*cut.jpg") as caught:
        data.decode_all()
    assert len(caught) == 1 and [item.image.name for item in data.items] == ["a.jpg"]
    assert data.photo(0).size == (40, 30)


def test_bad_boxes_are_clipped_or_dropped_with_one_warning_naming_the_file(tmp_path):
    boxes = np.array([[-5, 2, 10, 10], [3, 3, 3, 8], [1, 1, 5, 5], [1, 1, 5, 5], [np.nan, 0, 1, 1]])
    with pytest.warns(UserWarning) as caught:
        kept, classes = checked_boxes(tmp_path / "x.txt", boxes, np.array([0, 0, 7, 1, 0]), (20, 20), 2)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "x.txt" in message and "1 boxes reaching outside the photo, clipped" in message
    assert "1 boxes with no area" in message and "class outside 0..1" in message and "not numbers" in message
    assert kept.tolist() == [[0, 2, 10, 10], [1, 1, 5, 5]] and classes.tolist() == [0, 1]


def test_coco_json_maps_categories_and_skips_crowds(tmp_path):
    _photo(tmp_path / "img" / "p.jpg", (64, 48))
    annotations = {
        "images": [{"id": 7, "file_name": "p.jpg", "width": 64, "height": 48},
                   {"id": 8, "file_name": "gone.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"image_id": 7, "bbox": [10, 5, 20, 10], "category_id": 18, "iscrowd": 0},
            {"image_id": 7, "bbox": [0, 0, 64, 48], "category_id": 1, "iscrowd": 1},
            {"image_id": 7, "bbox": [1, 1, 2, 2], "category_id": 1},
        ],
    }  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    with pytest.warns(UserWarning, match="gone.jpg"):
        data = coco_boxes(tmp_path / "img", tmp_path / "ann.json")
    assert data.classes == ["person", "dog"] and len(data) == 1
    assert data.items[0].boxes.tolist() == [[10, 5, 30, 15], [1, 1, 3, 3]] and data.items[
        0
    ].classes.tolist() == [1, 0]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        coco_boxes(tmp_path / "img", tmp_path / "bad.json")


def test_augmentation_keeps_boxes_on_their_objects(pennfudan_folder):
    """A red square on grey: after any crop, zoom and flip, every box still frames red."""
    photo = np.full((120, 160, 3), 128, np.uint8)
    photo[30:70, 50:100] = (255, 0, 0)
    augment = DetectionAugment(64, Normalise(mean=(0, 0, 0), std=(1, 1, 1)), seed=0, jitter=0)
    for _ in range(40):
        image, boxes, classes = augment(Image.fromarray(photo), np.array([[50, 30, 100, 70]]), np.array([3]))
        assert image.shape == (3, 64, 64) and boxes.shape == (len(classes), 4)
        assert ((boxes >= 0) & (boxes <= 1)).all() and (classes == 3).all()
        for x1, y1, x2, y2 in (boxes * 64).round().int().tolist():
            inner = image[:, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
            if inner.numel():
                assert (inner[0] > 200).float().mean() > 0.9  # red inside the box
    empty = augment(Image.fromarray(photo), np.zeros((0, 4)), np.zeros(0))
    assert empty[1].shape == (0, 4)
    data = pennfudan_boxes(pennfudan_folder, "val", DetectionResize(96, Normalise()))
    images, boxes, classes = collate_detection([data[0], data[1]])
    assert images.shape == (2, 3, 96, 96) and len(boxes) == 2 and boxes[0].max() <= 1
