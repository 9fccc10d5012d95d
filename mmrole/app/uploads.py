"""Images a user uploads to the chat page: checked before any model sees them.

An upload must be a complete image file of a format vision endpoints take, of at most `max_bytes` bytes and
`max_pixels` pixels (the pixel count is read from the header before anything is decoded, so a small file that
would decode to gigabytes is refused without decoding it). Gradio keeps uploads in its own cache folder
(GRADIO_TEMP_DIR); nothing here writes anything.
"""

from __future__ import annotations

import os

from ..common.images import image_file_problem, image_type
from ..common.store import PathLike

DEFAULT_MAX_MB = 10.0
DEFAULT_MAX_PIXELS = 4096 * 4096


class UploadError(ValueError):
    """An upload that cannot be shown to the model; the message names the file and the reason."""


def check_upload(path: PathLike, *, max_bytes: int = int(DEFAULT_MAX_MB * 2**20),
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """UploadError unless the file at `path` is a usable image within the limits."""
    from PIL import Image

    name = os.path.basename(str(path))
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        raise UploadError(f"{name}: the upload cannot be read; upload it again") from None
    if size > max_bytes:
        raise UploadError(f"{name}: the file has {size / 2**20:.1f} MB; at most {max_bytes / 2**20:.3g} MB are "
                          "accepted")
    if image_type(head) is None:
        raise UploadError(f"{name}: not an image (JPEG, PNG, GIF or WebP expected)")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise UploadError(f"{name}: the image has too many pixels; at most {max_pixels} pixels are accepted") from None
    except (OSError, ValueError) as e:
        raise UploadError(f"{name}: damaged image ({type(e).__name__})") from None
    if width * height > max_pixels:
        raise UploadError(f"{name}: the image has {width}x{height} pixels; at most {max_pixels} pixels are accepted")
    problem = image_file_problem(path)
    if problem is not None:
        raise UploadError(f"{name}: {problem}")
