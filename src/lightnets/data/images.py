"""Opening any image a user may have as an RGB picture, or saying why not."""

from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

# Images with more pixels than this are refused before decoding: a file of a few bytes
# can declare 60000 x 60000 pixels (a decompression bomb) and decoding it would need
# gigabytes. The default is Pillow's own hard limit, 2 x Image.MAX_IMAGE_PIXELS =
# 178,956,970 pixels (e.g. 13,377 x 13,377, or 16,384 x 10,922): every camera photograph
# up to ~100-150 MP loads, while 16k x 16k (268 MP) does not. Decoded as 8-bit RGB an
# image at the limit takes 3 bytes a pixel, ~540 MB; converting modes (palette or alpha
# to RGB, 16-bit greyscale) briefly needs two to three times that, per image being
# loaded (so per DataLoader worker). JPEGs read with ``min_side`` are decoded at 1/2 to
# 1/8 of their size and need far less. Raise or lower the limit with set_max_pixels (the
# command line's --max-pixels), the max_pixels argument of load_image, or the
# environment variable LIGHTNETS_MAX_PIXELS (read at import, also by worker processes).
DEFAULT_MAX_PIXELS = 2 * 89_478_485
ENV_MAX_PIXELS = "LIGHTNETS_MAX_PIXELS"

_pillow_lock = threading.Lock()


class UnreadableImage(ValueError):
    """The file is not an image Pillow can decode, or is broken or absurdly large."""


def _check_limit(pixels: object, source: str) -> int:
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
        raise ValueError(f"{source} must be a positive whole number of pixels, got {pixels!r}")
    return pixels


def _limit_from_environment() -> int:
    raw = os.environ.get(ENV_MAX_PIXELS)
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        return _check_limit(int(raw), ENV_MAX_PIXELS)
    except ValueError:
        warnings.warn(
            f"ignoring {ENV_MAX_PIXELS}={raw!r} (not a positive whole number); "
            f"using {DEFAULT_MAX_PIXELS:,} pixels",
            stacklevel=2,
        )
        return DEFAULT_MAX_PIXELS


_max_pixels = _limit_from_environment()


def max_pixels() -> int:
    """The largest image, in pixels (width x height), :func:`load_image` decodes."""
    return _max_pixels


def set_max_pixels(pixels: int) -> None:
    """Set the largest image, in pixels, that :func:`load_image` decodes (for this process
    and the worker processes it starts later). Larger files raise :class:`UnreadableImage`
    and are skipped. Above Pillow's own hard limit, Pillow's limit is raised to match
    (Pillow keeps it in a process-wide setting)."""
    global _max_pixels
    _max_pixels = _check_limit(pixels, "the pixel limit")
    os.environ[ENV_MAX_PIXELS] = str(pixels)  # DataLoader workers started by spawn re-import
    _let_pillow_open(pixels)


def _let_pillow_open(pixels: int) -> None:
    """Pillow refuses images above 2 x MAX_IMAGE_PIXELS itself; never let that be lower
    than our limit, which is the one that counts (only ever raised, never lowered)."""
    with _pillow_lock:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and 2 * current < pixels:
            Image.MAX_IMAGE_PIXELS = (pixels + 1) // 2


def load_image(path: str | Path, min_side: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image, whatever its mode.

    Greyscale and CMYK are converted, palette images expanded, transparency composited
    over white (what a viewer shows), 16-bit images scaled down to 8 bits, and the EXIF
    orientation applied. ``min_side`` lets JPEG decoding shrink huge images by powers of
    two while keeping both sides at least that large (much faster, same result after a
    resize). An image of more than ``max_pixels`` pixels (default: :func:`max_pixels`,
    see :func:`set_max_pixels`) is refused before it is decoded. Raises
    :class:`UnreadableImage` with the file and the reason.
    """
    path = Path(path)
    limit = _max_pixels if max_pixels is None else _check_limit(max_pixels, "max_pixels")
    _let_pillow_open(limit)
    try:
        with warnings.catch_warnings():
            # Pillow warns from MAX_IMAGE_PIXELS on; the limit above is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(path)
            try:
                pixels = image.width * image.height
                if pixels > limit:
                    raise _too_large(path, f"{image.width}x{image.height} = {pixels:,}", limit)
                if min_side and image.format == "JPEG":
                    image.draft("RGB", _draft_size(image.size, min_side))
                image.load()
            except BaseException:
                image.close()  # a file that fails to decode is not left open
                raise
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except UnreadableImage:
        raise
    except FileNotFoundError:
        raise UnreadableImage(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UnreadableImage(f"{path}: a folder, not an image") from None
    except Image.DecompressionBombError as error:
        # Pillow's own check (at 2 x MAX_IMAGE_PIXELS, never below the limit here) came first
        found = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(path, f"{int(found[1]):,}" if found else "too many", limit) from None
    except MemoryError:
        raise UnreadableImage(f"{path}: not enough memory to decode it") from None
    except Exception as error:  # noqa: BLE001 - a hostile file may break a decoder in any way
        raise UnreadableImage(f"{path}: not a readable image ({type(error).__name__}: {error})") from None


def _too_large(path: Path, pixels: str, limit: int) -> UnreadableImage:
    return UnreadableImage(
        f"{path}: {pixels} pixels, more than the limit of {limit:,} "
        f"(a decompression bomb? raise the limit with --max-pixels)"
    )


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
