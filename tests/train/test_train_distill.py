"""Distillation: the loss, teacher re-normalisation, the on-disk teacher cache, teacher loading."""

import pytest
import torch
import torch.nn.functional as F

import lightnets
from lightnets.train.distill import TeacherCache, distillation_loss, fingerprint, load_teacher, renormalise


def test_distillation_loss_mixes_hard_and_softened_terms():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 7), torch.randn(5, 7)
    labels = torch.randint(0, 7, (5,))
    hard = F.cross_entropy(student, labels, reduction="none")
    assert torch.allclose(distillation_loss(student, teacher, labels, alpha=0.0), hard)
    # A student that equals its teacher pays only the hard term.
    same = distillation_loss(student, student.clone(), labels, alpha=0.9, temperature=4.0)
    assert torch.allclose(same, 0.1 * hard, atol=1e-6)
    t = 3.0
    soft = distillation_loss(student, teacher, labels, alpha=1.0, temperature=t)
    p = F.softmax(teacher / t, dim=1)
    expected = (p * (p.log() - F.log_softmax(student / t, dim=1))).sum(1) * t * t
    assert torch.allclose(soft, expected, atol=1e-6) and (soft > 0).all()


def test_temperature_squared_keeps_the_soft_gradient_scale():
    torch.manual_seed(1)
    teacher = torch.randn(64, 10)
    norms = []
    for t in (2.0, 8.0):
        student = torch.randn(64, 10, requires_grad=True)
        distillation_loss(student, teacher, torch.zeros(64, dtype=torch.long), 1.0, t).sum().backward()
        norms.append(student.grad.norm().item())
    # Without the T^2 factor the gradient would shrink ~16x from T=2 to T=8.
    assert 0.1 < norms[1] / norms[0] < 2.0


def test_renormalise_moves_images_between_normalisations():
    pixels = torch.rand(2, 3, 4, 4) * 255
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    student_in = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    teacher_in = renormalise(student_in, mean, std, (128.0,) * 3, (128.0,) * 3)
    assert torch.allclose(teacher_in, (pixels - 128) / 128, atol=1e-5)
    assert renormalise(student_in, mean, std, mean, std) is student_in


def test_teacher_cache_stores_exactly_and_separates_fingerprints(tmp_path):
    cache = TeacherCache(tmp_path, num_images=10, num_classes=3, key="a" * 64)
    assert cache.lookup(0, [1, 2]) is None
    logits = torch.randn(2, 3)
    cache.store(0, [1, 2], logits)
    assert torch.equal(cache.lookup(0, [1, 2]), logits)
    assert cache.lookup(0, [1, 3]) is None  # all or nothing
    assert cache.lookup(1, [1, 2]) is None  # another augmentation view
    cache.flush()
    again = TeacherCache(tmp_path, num_images=10, num_classes=3, key="a" * 64)
    assert torch.equal(again.lookup(0, [2, 1]), logits.flip(0))
    other = TeacherCache(tmp_path, num_images=10, num_classes=3, key="b" * 64)
    assert other.lookup(0, [1, 2]) is None
    assert (again.hits, again.misses) == (2, 0)
    with pytest.raises(ValueError, match="other data or another teacher"):
        TeacherCache(tmp_path, num_images=11, num_classes=3, key="a" * 64)


def test_fingerprint_depends_on_teacher_data_and_augmentation():
    teacher = lightnets.create_model("mobilenet_v2", width=0.35, num_classes=3)
    base = fingerprint(teacher, ["a.jpg", "b.jpg"], {"seed": 0})
    assert base == fingerprint(teacher, ["a.jpg", "b.jpg"], {"seed": 0})
    assert base != fingerprint(teacher, ["a.jpg", "c.jpg"], {"seed": 0})
    assert base != fingerprint(teacher, ["a.jpg", "b.jpg"], {"seed": 1})
    with torch.no_grad():
        teacher.head.fc.bias.add_(1.0)
    assert base != fingerprint(teacher, ["a.jpg", "b.jpg"], {"seed": 0})


def test_teacher_from_a_weights_file_or_a_model_name(tmp_path):
    model = lightnets.create_model("mobilenet_v2", width=0.5, num_classes=4)
    path = lightnets.convert(model, tmp_path / "teacher.safetensors")
    teacher = load_teacher(str(path), num_classes=4)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert torch.equal(teacher.head.fc.weight, model.head.fc.weight)
    with pytest.raises(ValueError, match="4 classes; the student 5"):
        load_teacher(str(path), num_classes=5)
    assert load_teacher("squeezenet1_1", num_classes=5).num_classes == 5
    with pytest.raises(ValueError, match="model.safetensors"):
        load_teacher(str(tmp_path))
