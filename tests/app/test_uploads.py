"""Uploads are checked before a model sees them: a non-image, a file too large, too many pixels and a damaged image
are each refused with a message naming the file and the reason."""

import io

import pytest
from PIL import Image

from mmrole.app.uploads import UploadError, check_upload


def png(path, size=(40, 30)):
    Image.new("RGB", size, (200, 30, 30)).save(path, "PNG")
    return path


def test_an_image_passes(tmp_path):
    check_upload(png(tmp_path / "ok.png"))


@pytest.mark.parametrize("case, message", [
    ("text", "notes.png: not an image"),
    ("large", "big.png: the file has 0.1 MB; at most 0.05 MB"),
    ("pixels", "wide.png: the image has 3000x2000 pixels; at most 1000000"),
    ("truncated", "cut.jpg: damaged image"),
])
def test_bad_uploads_are_named(tmp_path, case, message):
    if case == "text":
        path = tmp_path / "notes.png"
        path.write_text("just some words, not an image")
    elif case == "large":
        path = tmp_path / "big.png"
        Image.frombytes("RGB", (200, 200), bytes(range(256)) * 468 + bytes(192)).save(path, "PNG")
        path.write_bytes(path.read_bytes() + bytes(100_000))  # pad past the limit
    elif case == "pixels":
        path = png(tmp_path / "wide.png", (3000, 2000))
    else:
        buffer = io.BytesIO()
        Image.new("RGB", (300, 300), (10, 200, 10)).save(buffer, "JPEG")
        path = tmp_path / "cut.jpg"
        path.write_bytes(buffer.getvalue()[:600])
    with pytest.raises(UploadError, match=message):
        check_upload(path, max_bytes=int(0.05 * 2**20), max_pixels=1_000_000)
