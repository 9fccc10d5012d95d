"""The tiny reference checkpoint (written by the original Qwen-VL code, in ../shared) prepared for the scripts'
tests, and the reference images their samples show."""

import json
import os
import shutil

CONFIG_MAX_NEW_TOKENS = 16
REFERENCE_IMAGES = ("portrait_200x300.png", "scene_300x200.png", "shapes_64x48.png")


def tiny_checkpoint(qwen_reference, folder, max_new_tokens=CONFIG_MAX_NEW_TOKENS):
    """The tiny reference checkpoint (weights linked, not copied) with a shorter generation default."""
    source = qwen_reference / "tiny-qwen-vl-chat"
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / name)
    for name in ("model.safetensors", "qwen.tiktoken"):
        os.symlink(source / name, folder / name)
    config = json.loads((source / "generation_config.json").read_text())
    assert config["max_new_tokens"] == 512 and config["do_sample"] is True
    config["max_new_tokens"] = max_new_tokens
    (folder / "generation_config.json").write_text(json.dumps(config))
    return folder
