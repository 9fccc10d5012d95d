"""Image files as models and endpoints see them: the type from a file's bytes, and whether a file can be shown to a
model at all (checked before any request is sent or any generation starts)."""

from __future__ import annotations

from typing import Optional

from .store import PathLike


def image_type(data: bytes) -> Optional[str]:
    """The image type from a file's first bytes (extensions lie: a .jpg that is a PNG is common)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_file_problem(path: PathLike) -> Optional[str]:
    """Why the file at `path` cannot be shown to a model (missing, unreadable, not an image, damaged or
    truncated), or None. The whole image is decoded (JPEGs at a reduced scale, which still reads every
    byte), so a cut file is found before any request is sent or any generation starts."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except FileNotFoundError:
        return "image not found"
    except IsADirectoryError:
        return "image path is a folder"
    except UnidentifiedImageError:
        return "not an image (no image format recognised in its bytes)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"damaged image ({str(e) or type(e).__name__})"
    return None
