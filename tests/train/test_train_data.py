"""Training data: augmentation, CIFAR-10 readers, sharded deterministic batches."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets.data.cifar10 import CLASSES, Cifar10Jpeg, Cifar10Python, read_batch
from lightnets.data.datasets import open_dataset
from lightnets.data.images import UnreadableImage
from lightnets.data.train_transforms import TrainTransform
from lightnets.train.data import AugmentedImages, ShardedBatches, first_per_class, open_source


def photo(width=90, height=60, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("size", [32, 57, 128, 224])
def test_train_transform_any_resolution_is_a_function_of_the_seed(size):
    transform = TrainTransform(size=size, color_jitter=0.4)
    image = photo()
    a = transform(image, np.random.default_rng([1, 2]))
    b = transform(image, np.random.default_rng([1, 2]))
    c = transform(image, np.random.default_rng([1, 3]))
    assert a.shape == (3, size, size) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_boxes_stay_inside_the_image_and_respect_scale():
    transform = TrainTransform(size=32, scale=(0.25, 1.0))
    rng = np.random.default_rng(0)
    for width, height in [(90, 60), (224, 224), (40, 400), (1000, 20)]:
        for _ in range(50):
            left, top, right, bottom = transform.crop_box(width, height, rng)
            assert 0 <= left < right <= width and 0 <= top < bottom <= height


def test_flip_and_normalisation_and_bgr():
    image = Image.new("RGB", (10, 10), (200, 100, 50))
    array = np.asarray(image).copy()
    array[:, :5] = 0  # left half black
    image = Image.fromarray(array)
    keep = TrainTransform(
        size=10, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, mean=(0, 0, 0), std=(1, 1, 1)
    )
    flip = TrainTransform(
        size=10, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0, mean=(0, 0, 0), std=(1, 1, 1)
    )
    rng = np.random.default_rng
    assert torch.equal(keep(image, rng(0)), torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32)))
    assert torch.equal(flip(image, rng(0)), keep(image, rng(0)).flip(-1))
    bgr = TrainTransform(
        size=10,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        hflip=0.0,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        channel_order="BGR",
    )
    assert torch.equal(bgr(image, rng(0)), keep(image, rng(0)).flip(0))
    normalised = TrainTransform(size=10, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)(image, rng(0))
    assert normalised[0, 0, 9].item() == pytest.approx((200 - 123.675) / 58.395, rel=1e-5)


def test_eval_transform_matches_the_training_normalisation():
    transform = TrainTransform(size=96, mean=(128.0,) * 3, std=(128.0,) * 3)
    evaluation = transform.eval_transform()
    assert (evaluation.size, evaluation.resize) == (96, 110) and evaluation.mean == (128.0,) * 3


def write_cifar_batch(path, images: np.ndarray, labels: list[int], protocol: int = 2) -> None:
    """A batch in the CIFAR-10 python format: planar rows of 3072 bytes, labels, names."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {
        "batch_label": "testing batch 1 of 1",
        "labels": labels,
        "data": data,
        "filenames": [f"image_{i}.png" for i in range(len(images))],
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=protocol)


def test_cifar_python_format_reader(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    write_cifar_batch(folder / "data_batch_1", train[:4], [0, 1, 2, 9])
    write_cifar_batch(folder / "data_batch_2", train[4:], [3, 3], protocol=5)
    write_cifar_batch(folder / "test_batch", test, [5, 6, 7])
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": list(CLASSES), "num_vis": 3072}, handle, protocol=2)

    source = Cifar10Python(tmp_path, "train")
    assert len(source) == 6 and source.labels == [0, 1, 2, 9, 3, 3] and source.classes == list(CLASSES)
    for i in range(6):
        assert np.array_equal(np.asarray(source.image(i)), train[i])
    assert source.name_of(5) == "data_batch_2:image_1.png"
    held_out = open_source(tmp_path, "val")
    assert len(held_out) == 3 and held_out.labels == [5, 6, 7]
    assert np.array_equal(np.asarray(held_out.image(2)), test[2])


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_reader_refuses_pickles_that_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as handle:
        pickle.dump(
            {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": Exploit()}, handle, protocol=2
        )
    with pytest.raises(ValueError, match="refusing to unpickle"):
        read_batch(path)
    assert not (tmp_path / "pwned").exists()


def test_cifar_reader_rejects_malformed_batches(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as handle:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, handle, protocol=2)
    with pytest.raises(ValueError, match="3072"):
        read_batch(path)


def jpeg_bytes(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def test_cifar_jpeg_archive_reader(tmp_path):
    archive = tmp_path / "CIFAR-10-images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, count in (("train", 3), ("test", 1)):
            for label, name in enumerate(CLASSES):
                for k in range(count):
                    data = (
                        b"broken"
                        if (split, label, k) == ("train", 4, 2)
                        else jpeg_bytes((label * 20, k * 50, 0))
                    )
                    member = tarfile.TarInfo(f"CIFAR-10-images/{split}/{name}/{k:04d}.jpg")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    source = Cifar10Jpeg(archive, "train")
    assert len(source) == 30 and source.labels == [i // 3 for i in range(30)]
    assert abs(int(np.asarray(source.image(3 * 7 + 1))[16, 16, 0]) - 140) <= 3
    with pytest.raises(UnreadableImage, match="deer/0002.jpg"):
        source.image(3 * 4 + 2)
    assert len(Cifar10Jpeg(archive, "train", limit_per_class=2)) == 20
    assert len(open_source(archive, "val")) == 10


def test_imagenette_folders_can_be_labelled_0_to_9(imagenette):
    plain = open_dataset(imagenette / "val", imagenet_labels=False)
    assert sorted({label for _, label in plain.samples}) == list(range(10))
    assert open_dataset(imagenette / "val").categories == "imagenet-1k"  # the default is unchanged


def test_sharded_batches_split_the_global_batch_and_resume_mid_epoch():
    indices = list(range(100, 150))
    single = ShardedBatches(indices, 8, seed=3)
    ranks = [ShardedBatches(indices, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for r in ranks:
            r.set_epoch(epoch)
        whole = list(single)
        halves = [list(r) for r in ranks]
        assert len(whole) == 6 and all(len(h) == 6 for h in halves)
        for b, batch in enumerate(whole):
            assert batch == halves[0][b] + halves[1][b]
            assert {view for _, view in batch} == {epoch}
    single.set_epoch(1, start=4)
    assert list(single) == whole[4:]
    first = [i for batch in (single.set_epoch(0) or list(single)) for i, _ in batch]
    assert len(set(first)) == 48 and set(first) <= set(indices)


def test_views_repeat_augmentations_every_k_epochs(imagenette):
    source = open_source(imagenette, "val")
    indices = first_per_class(source, 1)
    assert len(indices) == 10
    sampler = ShardedBatches(indices, 2, seed=0, views=2)
    assert [sampler.view_of(e) for e in range(5)] == [0, 1, 0, 1, 0]
    data = AugmentedImages(source, TrainTransform(size=48), seed=0)
    a, b, c = data[(indices[3], 0)], data[(indices[3], 0)], data[(indices[3], 1)]
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0]) and a[1] == 3
