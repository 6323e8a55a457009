"""SSD and SSDLite: the papers' cost rows, anchors, box coder, matching, loss, NMS."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from lightnets.cli import main
from lightnets.tasks.anchors import anchor_shapes, anchors_per_position, decode, encode, ssd_anchors
from lightnets.tasks.average_precision import coco_scores
from lightnets.tasks.boxes import batched_nms, box_iou, nms
from lightnets.tasks.costs import cost_by_part
from lightnets.tasks.detdata import pennfudan_boxes
from lightnets.tasks.detect import Detections, evaluate_detection, postprocess
from lightnets.tasks.multibox import MIN_NEGATIVES, match, multibox_loss
from lightnets.tasks.task_model import save_task_weights

DETECTORS = [
    "ssdlite_mobilenet_v2",
    "ssdlite_mobilenet_v1",
    "ssd300_mobilenet_v1",
    "ssdlite_shufflenet_v1",
    "ssdlite_squeezenet1_1",
]


# (model, side, paper params M, paper MAdds B, parameter tolerance): MobileNet v1's
# Table 13 and MobileNetV2's Table 6, COCO (91 outputs per anchor).
PAPER_ROWS = [
    ("ssd300_mobilenet_v1", 300, 6.8, 1.2, 0.0),
    ("ssdlite_mobilenet_v2", 320, 4.3, 0.8, 0.05),
    ("ssdlite_mobilenet_v1", 320, 5.1, 1.3, 0.05),
]


@pytest.mark.parametrize(("name", "side", "params", "madds", "tolerance"), PAPER_ROWS)
def test_paper_cost_rows(name, side, params, madds, tolerance):
    """MAdds to the printed precision for all three; parameters to the printed precision
    for SSD300 (6.794 M), within 5 % for SSDLite (4.450 M against 4.3, 5.210 M against
    5.1: 0.11-0.15 M more in both, with the layout of the TensorFlow configurations the
    papers trained; BatchNorm, counted apart, would add 0.04-0.05 M more)."""
    model = lightnets.create_model(name)
    assert model.default_input_size == side
    report = lightnets.profile(model, (3, side, side))
    assert round(report.madds / 1e9, 1) == madds
    if tolerance == 0:
        assert round(report.params / 1e6, 1) == params
    else:
        assert report.params / 1e6 == pytest.approx(params, rel=tolerance)


@pytest.mark.parametrize("name", DETECTORS)
def test_outputs_match_the_anchors(name):
    model = lightnets.create_model(name).eval()
    side = model.default_input_size
    x = torch.zeros(1, 3, side, side)
    with torch.no_grad():
        maps = model.feature_maps(x)
        boxes, scores = model(x)
    anchors = ssd_anchors([tuple(m.shape[-2:]) for m in maps])
    assert len(maps) == 6
    assert boxes.shape == (1, len(anchors), 4) and scores.shape == (1, len(anchors), 91)
    # Each map halves (or nearly) the one before it.
    sides = [m.shape[-1] for m in maps]
    assert all(b == (a + 1) // 2 for a, b in zip(sides[1:], sides[2:], strict=False))


def test_mobilenet_v2_maps_are_layer_15s_expansion_and_the_last_layer():
    model = lightnets.create_model("ssdlite_mobilenet_v2")
    first, second = (model.backbone.feature_info[i] for i in model.levels)
    assert (first.module, first.num_chs, first.reduction) == ("features.14.expand", 576, 16)
    assert (second.module, second.num_chs, second.reduction) == ("features.18", 1280, 32)
    assert model.head.channels == [576, 1280, 512, 256, 256, 128]


def test_anchor_layout():
    assert anchors_per_position(6) == [3, 6, 6, 6, 6, 6]
    shapes = anchor_shapes(6)
    assert shapes[0][0] == pytest.approx((0.1, 0.1))
    assert shapes[0][1] == pytest.approx((0.2 * 2**0.5, 0.2 / 2**0.5))  # scale 0.2, ratio 2
    assert shapes[5][0] == pytest.approx((0.95, 0.95))
    assert shapes[5][5] == pytest.approx((0.95**0.5, 0.95**0.5))  # sqrt(0.95 * 1.0)
    anchors = ssd_anchors([(2, 2), (1, 1)])
    assert anchors.shape == (2 * 2 * 3 + 6, 4)
    # The first anchor of the first cell: scale 0.1 centred at (0.25, 0.25).
    assert anchors[0].tolist() == pytest.approx([0.2, 0.2, 0.3, 0.3])
    # Map, row, column, anchor: the second cell of the first row is three anchors on.
    assert ((anchors[3, :2] + anchors[3, 2:]) / 2).tolist() == pytest.approx([0.75, 0.25])


def test_box_coder_round_trip_and_scale():
    generator = torch.Generator().manual_seed(0)
    anchors = ssd_anchors([(4, 4), (2, 2)])
    centres = torch.rand(len(anchors), 2, generator=generator)
    sizes = torch.rand(len(anchors), 2, generator=generator) * 0.5 + 0.05
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    assert torch.allclose(decode(encode(boxes, anchors), anchors), boxes, atol=1e-5)
    # An anchor encodes to zeros; a box twice as wide to 5 log 2 in the width term.
    assert encode(anchors, anchors).abs().max() < 1e-6
    wider = anchors.clone()
    wider[:, 0] -= (anchors[:, 2] - anchors[:, 0]) / 2
    wider[:, 2] += (anchors[:, 2] - anchors[:, 0]) / 2
    assert torch.allclose(encode(wider, anchors)[:, 2], torch.full((len(anchors),), 5 * 0.6931472), atol=1e-4)


def test_reset_classifier_for_a_new_dataset():
    model = lightnets.create_model("ssdlite_mobilenet_v2", width=0.35, num_classes=2).eval()
    _, scores = model(torch.zeros(1, 3, 128, 128))
    assert scores.shape[-1] == 2
    model.reset_classifier(5)
    assert model(torch.zeros(1, 3, 128, 128))[1].shape[-1] == 5
    with pytest.raises(ValueError, match="num_classes >= 2"):
        model.reset_classifier(1)


def test_profile_reports_backbone_extras_and_head_at_the_papers_side(capsys):
    model = lightnets.create_model("ssdlite_mobilenet_v2")
    report = lightnets.profile(model, (3, 320, 320))
    parts = {p.part: p for p in cost_by_part(report, model)}
    assert sum(p.madds for p in parts.values()) == report.madds
    assert sum(p.params for p in parts.values()) == report.params
    assert main(["profile", "ssdlite_mobilenet_v2", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"extras"' in out and '"head"' in out and "320" in out


def test_box_iou_and_nms():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
    iou = box_iou(a, a)
    assert iou[0, 1].item() == pytest.approx(1 / 7) and iou[0, 2].item() == 0 and iou[2, 2].item() == 1
    boxes = torch.tensor(
        [[0.0, 0.0, 1.0, 1.0], [0.05, 0.0, 1.05, 1.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.1, 1.0, 1.1]]
    )
    scores = torch.tensor([0.5, 0.9, 0.3, 0.4])
    # Box 1 (0.9) suppresses boxes 0 and 3 (IoU > 0.6 with it); box 2 overlaps nothing.
    assert nms(boxes, scores, 0.6).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 0, 3, 2]
    # Another class is never suppressed.
    assert sorted(batched_nms(boxes, scores, torch.tensor([0, 0, 0, 1]), 0.6).tolist()) == [1, 2, 3]
    assert batched_nms(boxes[:0], scores[:0], torch.tensor([], dtype=torch.long), 0.6).numel() == 0


def test_matching_takes_the_best_box_and_forces_a_match_for_every_box():
    anchors = ssd_anchors([(4, 4), (2, 2)])
    exact = anchors[5]
    tiny = torch.tensor([0.90, 0.90, 0.91, 0.91])  # overlaps every anchor by less than 0.5
    labels, offsets = match(anchors, torch.stack([exact, tiny]), torch.tensor([2, 0]))
    assert labels[5] == 3 and offsets[5].abs().max() < 1e-5  # class 2 -> label 3; the anchor itself
    forced = box_iou(tiny[None], anchors)[0].argmax()
    assert labels[forced] == 1  # class 0, forced onto its best anchor
    assert (labels > 0).sum() >= 2 and torch.allclose(
        decode(offsets[forced], anchors[forced]), tiny, atol=1e-5
    )
    empty_labels, empty_offsets = match(anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert (empty_labels == 0).all() and (empty_offsets == 0).all()


def test_multibox_loss_mines_three_negatives_per_positive():
    anchors = ssd_anchors([(4, 4), (2, 2)])
    labels, offsets = match(anchors, anchors[[5]], torch.tensor([0]))
    empty, no_offsets = match(anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    labels, offsets = torch.stack([labels, empty]), torch.stack([offsets, no_offsets])
    positives = int((labels[0] > 0).sum())
    scores = torch.zeros(2, len(anchors), 2, requires_grad=True)
    predicted = offsets.clone().requires_grad_(True)
    loss, terms = multibox_loss(predicted, scores, labels, offsets)
    assert terms["box_loss"] == 0  # the offsets are the targets
    # Uniform scores: every anchor costs ln 2; counted are the positives, 3 negatives
    # per positive in the first image and the minimum in the image without objects.
    counted = positives + 3 * positives + MIN_NEGATIVES
    assert loss.item() == pytest.approx(counted * math.log(2) / positives, rel=1e-5)
    loss.backward()
    assert int((scores.grad.abs().sum(-1) > 0).sum()) == counted


def test_postprocess_gives_the_confident_anchor_as_a_detection():
    anchors = ssd_anchors([(4, 4), (2, 2)])
    offsets = torch.zeros(1, len(anchors), 4)
    scores = torch.zeros(1, len(anchors), 3)
    scores[0, :, 0] = 10.0  # background everywhere ...
    scores[0, 7, 2] = 12.0  # ... but anchor 7 is class 1 (label 2)
    [found] = postprocess(offsets, scores, anchors, score_threshold=0.5)
    assert len(found) == 1 and found.classes.tolist() == [1]
    assert torch.allclose(found.boxes[0], anchors[7].clamp(0, 1)) and found.scores[0] > 0.8


def test_coco_scores_of_perfect_and_of_no_detections(pennfudan_folder):
    data = pennfudan_boxes(pennfudan_folder, "val")
    data.items = data.items[:4]
    sizes = [Image.open(item.image).size for item in data.items]
    perfect = [
        Detections(torch.from_numpy(item.boxes / np.array([w, h, w, h], np.float32)),
                   torch.ones(len(item.classes)), torch.from_numpy(item.classes))
        for item, (w, h) in zip(data.items, sizes, strict=True)
    ]  # fmt: skip
    scores = coco_scores(data, perfect, sizes)
    assert scores.map == pytest.approx(1.0) and scores.ap50 == pytest.approx(1.0)
    assert scores.per_class["person"] == pytest.approx(1.0) and scores.objects == sum(
        len(i.classes) for i in data.items
    )
    shifted = [Detections(d.boxes + 0.5, d.scores, d.classes) for d in perfect]  # nowhere near
    assert coco_scores(data, shifted, sizes).map == 0
    none = [
        Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)) for _ in data.items
    ]
    assert coco_scores(data, none, sizes).map == 0


def test_an_untrained_detector_is_evaluated_end_to_end(pennfudan_folder):
    data = pennfudan_boxes(pennfudan_folder, "val")
    data.items = data.items[:3]
    model = lightnets.create_model("ssdlite_mobilenet_v2", width=0.35, num_classes=2)
    scores = evaluate_detection(model, data, 128)
    assert scores.images == 3 and 0 <= scores.map <= 1


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    model = lightnets.create_model("ssdlite_mobilenet_v2", width=0.35, num_classes=2)
    path = tmp_path_factory.mktemp("detector") / "model.safetensors"
    return save_task_weights(model, path, "ssdlite_mobilenet_v2", {"width": 0.35}, ["person"], 96)


def test_detect_command_draws_and_lists_detections(tiny_detector, pennfudan_folder, tmp_path, cli):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("FudanPed00005", "PennPed00026"):
        (photos / f"{name}.png").write_bytes(
            (pennfudan_folder / "PennFudanPed" / "PNGImages" / f"{name}.png").read_bytes()
        )
    code, out, err = cli("detect", photos, "--weights", tiny_detector, "--out", tmp_path / "out",
                         "--threshold", "0.2", "--format", "json")  # fmt: skip
    assert code == 0, err
    records = json.loads(out)
    assert [Path(r["drawing"]).name for r in records] == [
        "FudanPed00005_detections.png",
        "PennPed00026_detections.png",
    ]
    assert Image.open(records[0]["drawing"]).size == Image.open(photos / "FudanPed00005.png").size
    listing = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(listing) == sum(len(r["detections"]) for r in records)
    for d in listing:
        assert d["category"] == "person" and d["score"] >= 0.2 and len(d["bbox"]) == 4


def test_eval_task_detection_and_refusals(tiny_detector, pennfudan_folder, cli):
    code, out, err = cli("eval", "--task", "detection", "--data", pennfudan_folder, "--weights", tiny_detector,
                         "--limit", 2, "--format", "json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == 2 and result["size"] == 96 and 0 <= result["mAP"] <= 1
    assert set(result["per_class_AP"]) == {"person"}
    code, _, err = cli("detect", pennfudan_folder, "--weights", "mobilenet_v2_100_224.tflite_uint8")
    assert code == 2 and "is not a detection model" in err


def test_onnx_export_gives_the_same_boxes_and_scores(tiny_detector, tmp_path, cli):
    import onnxruntime as ort

    code, out, err = cli("export", "--weights", tiny_detector, "-o", tmp_path / "det.onnx")
    assert code == 0 and "2 classes" in out, err
    session = ort.InferenceSession(str(tmp_path / "det.onnx"))
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores"]
    model = lightnets.create_model("ssdlite_mobilenet_v2", weights=str(tiny_detector)).eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    boxes, scores = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected_boxes, expected_scores = model(x)
    assert np.abs(boxes - expected_boxes.numpy()).max() < 1e-4
    assert np.abs(scores - expected_scores.numpy()).max() < 1e-4


def test_bench_times_a_detector_at_its_papers_side(tmp_path):
    from lightnets.deploy.bench import measure, model_targets

    (target,) = model_targets(
        "ssdlite_mobilenet_v2", {"width": 0.35}, backends=["ort_fp32"], workdir=tmp_path
    )
    assert target.input_size == 320 and target.file is not None
    result = measure(target, threads=1, runs=50, warmup=1, batch=2, batch_runs=1)
    assert result.latency_ms > 0 and result.throughput > 0


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_loads_back_from_its_weights_file(name, tmp_path):
    model = lightnets.create_model(name, num_classes=3)
    path = save_task_weights(model, tmp_path / "model.safetensors", name, {}, ["a", "b"], 128)
    again = lightnets.create_model(name, weights=str(path))
    assert again.num_classes == 3 and again.pretrained_cfg.categories == ["a", "b"]
    state, loaded = model.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], loaded[k]) for k in state)
