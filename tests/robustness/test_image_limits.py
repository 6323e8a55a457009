"""Decompression bombs and the pixel limit: refused before decoding, skipped by name."""

from __future__ import annotations

import struct
import warnings
import zlib

import pytest
from PIL import Image

from lightnets import create_model
from lightnets.classify import predict
from lightnets.data import UnreadableImage, load_image
from lightnets.data import images as images_module
from lightnets.data.datasets import ImageDataset


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00"))
        + _chunk(b"IEND", b"")
    )


@pytest.fixture
def restore_limits(monkeypatch):
    monkeypatch.setattr(images_module, "_max_pixels", images_module._max_pixels)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    # set_max_pixels writes the variable for worker processes: record it (setenv) so that
    # it is put back as it was, absent, and no later test's subprocess inherits the limit.
    monkeypatch.setenv(images_module.ENV_MAX_PIXELS, str(images_module.max_pixels()))


def test_bomb_png_is_unreadable_naming_file_and_limit(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    assert path.stat().st_size < 100
    with pytest.raises(
        UnreadableImage, match=r"bomb\.png: 3,600,000,000 pixels, more than the limit of 178,956,970"
    ) as caught:
        load_image(path)
    assert "--max-pixels" in str(caught.value)


def test_default_limit_is_pillows_hard_limit():
    assert images_module.DEFAULT_MAX_PIXELS == 178_956_970
    assert images_module.max_pixels() == images_module.DEFAULT_MAX_PIXELS


def test_image_just_above_pillows_warning_level_is_not_refused_by_a_warning(tmp_path):
    # 9500 x 9500 = 90.25 MP: above Pillow's warning level (89.5 MP), within the limit.
    path = tmp_path / "big.png"
    path.write_bytes(bomb_png(9500, 9500))  # the header is checked, then decoding fails (no data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UnreadableImage, match="not a readable image") as caught:
            load_image(path)
    assert "more than the limit" not in str(caught.value)


def test_dataset_and_predict_skip_the_bomb_with_its_name(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    dataset = ImageDataset([(bomb, 0), (good, 1)], ["a", "b"], transform=lambda image: image)
    with pytest.warns(UserWarning, match="bomb.png"):
        assert dataset[0] is None
    assert dataset[1][1] == 1

    model = create_model("squeezenet1_1", num_classes=3)
    predictions, skipped = predict(model, [bomb, good], topk=1)
    assert [p.path for p in predictions] == [str(good)]
    assert len(skipped) == 1 and "bomb.png" in skipped[0]


def test_limit_is_configurable(tmp_path, restore_limits):
    path = tmp_path / "small.png"
    Image.new("RGB", (20, 20)).save(path)
    with pytest.raises(UnreadableImage, match="more than the limit of 100"):
        load_image(path, max_pixels=100)
    images_module.set_max_pixels(399)
    assert images_module.max_pixels() == 399
    with pytest.raises(UnreadableImage, match="more than the limit of 399"):
        load_image(path)
    images_module.set_max_pixels(400)
    assert load_image(path).size == (20, 20)
    with pytest.raises(ValueError):
        images_module.set_max_pixels(0)
    with pytest.raises(ValueError):
        load_image(path, max_pixels=-5)


def test_raising_the_limit_above_pillows_lets_pillow_open(tmp_path, restore_limits):
    images_module.set_max_pixels(400_000_000)
    assert 2 * Image.MAX_IMAGE_PIXELS >= 400_000_000
    assert images_module.os.environ[images_module.ENV_MAX_PIXELS] == "400000000"
    path = tmp_path / "tall.png"
    path.write_bytes(bomb_png(20000, 10000))  # 200 MP: passes the check, has no pixel data
    with pytest.raises(UnreadableImage, match="not a readable image"):
        load_image(path)


def test_limit_from_environment(monkeypatch):
    monkeypatch.setenv(images_module.ENV_MAX_PIXELS, "1234")
    assert images_module._limit_from_environment() == 1234
    monkeypatch.setenv(images_module.ENV_MAX_PIXELS, "lots")
    with pytest.warns(UserWarning, match="ignoring"):
        assert images_module._limit_from_environment() == images_module.DEFAULT_MAX_PIXELS


@pytest.mark.parametrize(
    "content",
    [
        bomb_png(0, 0),
        bomb_png()[:40],
        b"GIF89a" + b"\xff" * 20,
        b"II*\x00" + b"\x08\x00\x00\x00" + b"\xff" * 30,
        b"BM" + b"\xff" * 60,
    ],
)
def test_malformed_headers_are_unreadable_not_tracebacks(tmp_path, content):
    path = tmp_path / "odd.img.png"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match="odd.img.png"):
        load_image(path)


def test_folder_named_like_an_image(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(UnreadableImage, match="dir.jpg"):
        load_image(tmp_path / "dir.jpg")


def test_a_thin_strip_is_not_blown_up_by_the_resize():
    from lightnets.data import EvalTransform

    strip = Image.new("RGB", (1, 60000), (30, 60, 90))  # 60k pixels: within any limit
    cropped = EvalTransform().crop(strip)  # untrimmed: a 256 x 15,360,000 intermediate (12 GB)
    assert cropped.size == (224, 224)
    square = Image.new("RGB", (300, 280), (1, 2, 3))
    assert EvalTransform().crop(square).size == (224, 224)


def test_transform_from_a_file_is_bounded():
    from lightnets.data import EvalTransform

    with pytest.raises(ValueError, match="16..4096"):
        EvalTransform.from_dict({"size": 100000, "resize": 100000})
    with pytest.raises(ValueError, match="unknown transform keys"):
        EvalTransform.from_dict({"size": 224, "zoom": 2})
    assert EvalTransform.from_dict(EvalTransform().to_dict()) == EvalTransform()
