"""Image preprocessing against the original transform's pixels (torchvision Resize/ToTensor/Normalize)."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmrole.qwen_vl import load_image, preprocess_image, preprocess_images
from mmrole.qwen_vl.image_processing_qwen import CLIP_MEAN, CLIP_STD


@pytest.fixture(scope="module")
def reference(qwen_reference):
    images = json.loads((qwen_reference / "expected.json").read_text(encoding="utf-8"))["images"]
    tensors = load_file(str(qwen_reference / "expected_tensors.safetensors"))
    return images, tensors


def test_pixels_match_reference_for_every_image(qwen_reference, reference, monkeypatch):
    images, tensors = reference
    assert len(images) >= 3
    # Paths are recorded relative to the reference folder, as the original prompts used them.
    monkeypatch.chdir(qwen_reference)
    for path, info in images.items():
        pixels = preprocess_image(path, image_size=info["pixels_shape"][-1])
        expected = tensors[info["pixels_tensor_key"]]
        assert pixels.dtype == torch.float32 and list(pixels.shape) == info["pixels_shape"], path
        assert torch.allclose(pixels, expected, rtol=0, atol=1e-6), (path, (pixels - expected).abs().max())
        assert abs(pixels.mean().item() - info["pixels_mean"]) < 1e-6, path


def test_pil_input_batch_and_alpha_dropped(qwen_reference, reference):
    images, tensors = reference
    paths = [qwen_reference / p for p in images]
    size = next(iter(images.values()))["pixels_shape"][-1]
    batch = preprocess_images(paths, image_size=size)
    assert batch.shape == (len(paths), 3, size, size)
    for row, path, info in zip(batch, paths, images.values()):
        assert torch.equal(row, tensors[info["pixels_tensor_key"]])
        with Image.open(path) as opened:
            assert torch.equal(preprocess_image(opened, image_size=size), row)
    rgba = [p for p, info in zip(paths, images.values()) if info["mode"] == "RGBA"]
    assert rgba, "the reference has an RGBA image"
    with Image.open(rgba[0]) as opened:
        assert load_image(opened).mode == "RGB"


def test_normalisation_constants_and_default_size(tmp_path):
    white = tmp_path / "white.png"
    Image.new("RGB", (10, 7), (255, 255, 255)).save(white)
    pixels = preprocess_image(white)
    assert pixels.shape == (3, 448, 448)
    expected = [(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)]
    assert torch.allclose(pixels[:, 0, 0], torch.tensor(expected), atol=1e-6)
    assert preprocess_images([], image_size=32).shape == (0, 3, 32, 32)


def test_bad_images_are_named(tmp_path):
    with pytest.raises(ValueError, match="URL"):
        preprocess_image("https://example.com/cat.png")
    missing = tmp_path / "nowhere.png"
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        preprocess_image(missing)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="broken.png"):
        preprocess_images([broken])
