"""Qwen-VL's list format rendered as prompt text, without loading a tokenizer (or torch).

`from_list_format([{'image': p}, {'text': t}])` gives `"Picture 1: <img>p</img>\\nt"`, the user
turn of every MMRole instruction sample; `QWenTokenizer.from_list_format` delegates here.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

# The tag strings (constructor arguments and attributes of the original tokenizer), in id order:
# they get the ids 151851..151859, and this order is the original's `IMAGE_ST`.
DEFAULT_TAGS: Dict[str, str] = {
    "ref_start_tag": "<ref>",
    "ref_end_tag": "</ref>",
    "box_start_tag": "<box>",
    "box_end_tag": "</box>",
    "quad_start_tag": "<quad>",
    "quad_end_tag": "</quad>",
    "image_start_tag": "<img>",
    "image_end_tag": "</img>",
    "image_pad_tag": "<imgpad>",
}


def picture_label(number: int) -> str:
    """What precedes the `number`-th image of a message (1-based): `Picture N: `."""
    return f"Picture {number}: "


def from_list_format(list_format: Sequence[Dict[str, Any]], tags: Dict[str, str] = DEFAULT_TAGS) -> str:
    """[{'image': p}, {'text': t}, {'ref': r, 'box': [[x1, y1, x2, y2], ...]}, ...] -> prompt text.

    Images are numbered `Picture N: <img>p</img>\n`; box coordinates are cut to integers (as `%d`
    does). Needs no vocabulary, so data scripts can format prompts without loading a tokenizer.
    `tags` maps the DEFAULT_TAGS names to the tag strings.
    """
    text = ""
    num_images = 0
    for element in list_format:
        if "image" in element:
            num_images += 1
            text += f"{picture_label(num_images)}{tags['image_start_tag']}{element['image']}{tags['image_end_tag']}\n"
        elif "text" in element:
            text += element["text"]
        elif "box" in element:
            if "ref" in element:
                text += tags["ref_start_tag"] + element["ref"] + tags["ref_end_tag"]
            for box in element["box"]:
                if len(box) != 4:
                    raise ValueError(f"a box needs 4 coordinates (x1, y1, x2, y2), got {box!r}")
                text += tags["box_start_tag"] + "(%d,%d),(%d,%d)" % tuple(box) + tags["box_end_tag"]
        else:
            raise ValueError(f"unsupported list-format element {element!r} (expected image, text or box)")
    return text
