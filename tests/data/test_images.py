"""Any image a user has: modes, sizes, broken files."""

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets.data import EvalTransform, UnreadableImage, load_image
from lightnets.data.datasets import open_dataset


@pytest.mark.parametrize(
    "mode, size",
    [
        ("L", (40, 30)),
        ("CMYK", (64, 64)),
        ("RGBA", (64, 48)),
        ("P", (50, 50)),
        ("I;16", (33, 70)),
        ("RGB", (5, 7)),
    ],
)
def test_every_mode_becomes_rgb(tmp_path, mode, size):
    image = Image.new(mode, size)
    suffix = ".jpg" if mode in ("L", "CMYK", "RGB") else ".png"
    if mode == "I;16":
        image = Image.fromarray(np.full(size[::-1], 40000, dtype=np.uint16))
    path = tmp_path / f"image{suffix}"
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == size
    assert EvalTransform()(loaded).shape == (3, 224, 224)  # tiny images are scaled up


def test_transparency_is_composited_over_white(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)


def test_huge_jpeg_is_decoded_at_reduced_size(tmp_path):
    Image.new("RGB", (8000, 6000), (10, 200, 30)).save(tmp_path / "huge.jpg", quality=50)
    image = load_image(tmp_path / "huge.jpg", min_side=256)
    assert min(image.size) >= 256 and max(image.size) <= 2000  # JPEG draft mode, 1/4 or 1/8
    tensor = EvalTransform()(image)
    assert tensor.shape == (3, 224, 224) and torch.isfinite(tensor).all()


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 50])
def test_broken_files_raise_unreadable_image_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match="broken.jpg"):
        load_image(path)


def test_bgr_and_caffe_normalisation():
    image = Image.new("RGB", (300, 260), (200, 100, 50))
    caffe = EvalTransform(227, 256, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), channel_order="BGR")
    tensor = caffe(image)
    assert tensor.shape == (3, 227, 227)
    assert tensor[:, 100, 100].tolist() == [50 - 104.0, 100 - 117.0, 200 - 123.0]


def test_transform_rejects_bad_settings():
    with pytest.raises(ValueError, match="need 0 < size <= resize"):
        EvalTransform(size=256, resize=224)
    with pytest.raises(ValueError, match="unknown interpolation"):
        EvalTransform(interpolation="area")


def test_class_folders_of_imagenet_wnids_keep_imagenet_labels(tmp_path):
    for wnid in ("n01440764", "n02102040"):
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (20, 20)).save(tmp_path / wnid / "a.JPEG")
    dataset = open_dataset(tmp_path)
    assert [label for _, label in dataset.samples] == [0, 217]
    assert dataset.classes[217] == "English springer"
    (tmp_path / "not_a_wnid").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "not_a_wnid" / "b.png")
    assert [label for _, label in open_dataset(tmp_path).samples] == [0, 1, 2]


def test_labels_csv_layout(imagenet_sample):
    dataset = open_dataset(imagenet_sample)
    assert len(dataset) == 500 and dataset.categories == "imagenet-1k"
    path, label = dataset.samples[0]
    assert path.name == "n01443537_goldfish.JPEG" and label == 1
