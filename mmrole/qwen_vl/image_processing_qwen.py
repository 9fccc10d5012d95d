"""Image loading and preprocessing of Qwen-VL-Chat's vision tower, with Pillow only (no torchvision).

Same numbers as the original transform (torchvision Resize(BICUBIC) + ToTensor + Normalize on a
PIL image): RGB conversion, Pillow bicubic resize to (image_size, image_size), uint8 / 255 in
float32, then (x - mean) / std with the CLIP mean and std.
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The released Qwen-VL-Chat's vision input size; tiny checkpoints set their own in config.visual.
DEFAULT_IMAGE_SIZE = 448

ImageInput = Union[str, "os.PathLike[str]", Image.Image]


def load_image(image: ImageInput) -> Image.Image:
    """A local image file (or a PIL image) as an RGB PIL image; alpha is dropped, not blended.

    URLs are refused: nothing in this project downloads. Errors name the path.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = os.fspath(image)
    if path.startswith(("http://", "https://")):
        raise ValueError(f"image {path!r} is a URL; download it first and pass the local path (no network access)")
    if not os.path.isfile(path):
        # Prompts name images by the path inside <img>...</img>, often relative: say where it was looked up.
        where = "" if os.path.isabs(path) else f" (relative to the working directory {os.getcwd()})"
        raise FileNotFoundError(f"image file not found: {path!r}{where}")
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path!r}: {error}") from error


def resized_rgb(image: ImageInput, image_size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """The first half of `preprocess_image`: uint8 RGB [3, image_size, image_size] after the bicubic resize
    (a quarter of the normalised pixels' memory, for images that wait before the model sees them)."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    rgb = load_image(image).resize((image_size, image_size), resample=Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)


def normalise_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """The second half of `preprocess_image`: uint8 RGB [..., 3, S, S] -> CLIP-normalised float32 pixels."""
    pixels = rgb.to(torch.float32).div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


def preprocess_image(image: ImageInput, image_size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """One image as normalised float32 pixels, shape [3, image_size, image_size]."""
    return normalise_rgb(resized_rgb(image, image_size))


def preprocess_images(images: Sequence[ImageInput], image_size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """Several images stacked, shape [N, 3, image_size, image_size] (N = len(images), may be 0)."""
    if not images:
        return torch.empty(0, 3, image_size, image_size, dtype=torch.float32)
    return torch.stack([preprocess_image(image, image_size) for image in images])


__all__ = ["CLIP_MEAN", "CLIP_STD", "DEFAULT_IMAGE_SIZE", "load_image", "normalise_rgb", "preprocess_image",
           "preprocess_images", "resized_rgb"]
