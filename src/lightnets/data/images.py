"""Opening any image a user may have as an RGB picture, or saying why not."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

# Images above this many pixels are refused as likely decompression bombs; 16k x 16k
# photographs still load (Pillow's default limit is 89 M pixels with a warning).
MAX_PIXELS = 16384 * 16384


class UnreadableImage(ValueError):
    """The file is not an image Pillow can decode, or is broken or absurdly large."""


def load_image(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image, whatever its mode.

    Greyscale and CMYK are converted, palette images expanded, transparency composited
    over white (what a viewer shows), 16-bit images scaled down to 8 bits, and the EXIF
    orientation applied. ``min_side`` lets JPEG decoding shrink huge images by powers of
    two while keeping both sides at least that large (much faster, same result after a
    resize). Raises :class:`UnreadableImage` with the reason.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            if image.width * image.height > MAX_PIXELS:
                raise UnreadableImage(f"{path}: {image.width}x{image.height} is too large to decode")
            if min_side and image.format == "JPEG":
                image.draft("RGB", _draft_size(image.size, min_side))
            image.load()
    except UnreadableImage:
        raise
    except FileNotFoundError:
        raise UnreadableImage(f"{path}: no such file") from None
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
    ) as error:
        raise UnreadableImage(f"{path}: not a readable image ({error})") from None
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image)


def _draft_size(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    """The smallest (w, h) with the image's aspect ratio whose shorter side is ``min_side``."""
    width, height = size
    scale = min_side / min(width, height)
    return max(1, int(width * scale) + 1), max(1, int(height * scale) + 1)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size and array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
