"""Images of Qwen-VL-Chat: loading and preprocessing for its vision tower, with Pillow only (no torchvision), and
finding the image spans (`<img>path</img>`) in a prompt's token ids.

Same numbers as the original transform (torchvision Resize(BICUBIC) + ToTensor + Normalize on a
PIL image): RGB conversion, Pillow bicubic resize to (image_size, image_size), uint8 / 255 in
float32, then (x - mean) / std with the CLIP mean and std.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

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


# --- where the images are in a prompt's ids ---------------------------------------------------------

def find_image_spans(input_ids: torch.Tensor, image_start_id: int, n_positions: int) -> List[Tuple[int, int, int]]:
    """(row, index of <img>, index of </img>) for every image span, in order of appearance (row-major).

    Raises a ValueError naming the row and position for an unclosed or misplaced tag, or a span whose inside
    is not exactly `n_positions` long.
    """
    image_end_id = image_start_id + 1
    tags = ((input_ids == image_start_id) | (input_ids == image_end_id)).nonzero().tolist()
    spans: List[Tuple[int, int, int]] = []
    open_tag: Optional[Tuple[int, int]] = None
    for row, index in tags:
        is_start = int(input_ids[row, index]) == image_start_id
        if open_tag is not None and (row != open_tag[0] or is_start):
            raise ValueError(f"<img> at row {open_tag[0]}, position {open_tag[1]} is not closed by </img>")
        if is_start:
            open_tag = (row, index)
            continue
        if open_tag is None:
            raise ValueError(f"</img> at row {row}, position {index} has no opening <img>")
        inside = index - open_tag[1] - 1
        if inside != n_positions:
            raise ValueError(
                f"the image span at row {row}, position {open_tag[1]} has {inside} positions inside <img>...</img>, "
                f"expected {n_positions}"
            )
        spans.append((row, open_tag[1], index))
        open_tag = None
    if open_tag is not None:
        raise ValueError(f"<img> at row {open_tag[0]}, position {open_tag[1]} is not closed by </img>")
    return spans


def span_image_path(span_ids: List[int], image_pad_id: int) -> str:
    """The image path written inside a span: one id per UTF-8 byte, then <imgpad> ids."""
    path_ids = span_ids[: span_ids.index(image_pad_id)] if image_pad_id in span_ids else span_ids
    if any(not 0 <= token < 256 for token in path_ids):
        raise ValueError(f"an <img> span holds ids that are not path bytes: {path_ids[:16]}...")
    try:
        return bytes(path_ids).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"an <img> span does not hold a UTF-8 path: {bytes(path_ids)!r}") from err
