"""The one loader every script uses: a Qwen-VL-Chat-format folder, or a LoRA adapter folder on top of one,
to (model in eval mode, tokenizer). Local files only: nothing here touches the network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch

from ..common.store import PathLike
from .configuration_qwen import CONFIG_FILE, check_qwen_config_file, local_folder

VOCAB_FILE = "qwen.tiktoken"
ADAPTER_CONFIG_FILE = "adapter_config.json"
# Where the scripts expect the released weights (see model_weights/README.md).
MODEL_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "model_weights"



def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: Union[str, torch.device]) -> torch.dtype:
    """float32 on CPU; on a CUDA GPU bfloat16 when it supports it, else float16."""
    if torch.device(device).type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def check_model_folder(folder: PathLike) -> Path:
    """Raise a clear error unless `folder` is a local Qwen-VL-Chat-format checkpoint (config of type qwen)."""
    return check_qwen_config_file(local_folder(folder))


def check_tokenizer_folder(folder: PathLike) -> Path:
    folder = Path(folder)
    if not (folder / VOCAB_FILE).is_file():
        raise FileNotFoundError(f"{folder / VOCAB_FILE} does not exist: the Qwen tokenizer needs its vocabulary file")
    return folder


def adapter_base_model(adapter_folder: PathLike) -> Path:
    """The base model folder named in a peft adapter_config.json.

    The recorded path is tried as given (relative to the working directory), relative to the adapter folder,
    and as model_weights/<its last component> (so a hub id such as "Qwen/Qwen-VL-Chat" finds the local copy).
    """
    config_path = Path(adapter_folder) / ADAPTER_CONFIG_FILE
    try:
        recorded = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as err:
        raise ValueError(f"{config_path} is not readable JSON: {err}") from err
    if not recorded:
        raise ValueError(f"{config_path} does not name its base model (base_model_name_or_path)")
    candidates = [Path(recorded), Path(adapter_folder) / recorded, MODEL_WEIGHTS_DIR / Path(recorded).name]
    for candidate in candidates:
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{config_path} names base model {recorded!r}, which is not a local folder (tried {tried})")


def load_model_and_tokenizer(
    model_path: PathLike,
    *,
    use_lora: bool = False,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    device_map: Optional[Union[str, dict]] = None,
    base_model_path: Optional[PathLike] = None,
):
    """Load (model.eval(), tokenizer) from a Qwen-VL-Chat-format folder.

    model_path: a full checkpoint, or (with use_lora, or whenever it holds adapter_config.json) a peft LoRA
    adapter whose base model is named in its adapter config (override with base_model_path); the adapter is
    applied on top, like the original AutoPeftModelForCausalLM. The tokenizer comes from model_path when it
    has qwen.tiktoken, else from the base model.
    device / dtype: default CUDA if available else CPU; float32 on CPU, bfloat16 (or float16) on GPU.
    device_map: e.g. "auto" to spread a large model over the available devices (then `device` is unused).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import modeling_qwen, tokenization_qwen  # noqa: F401  (importing them registers the Auto classes)

    folder = Path(model_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    is_adapter = (folder / ADAPTER_CONFIG_FILE).is_file()
    if use_lora and not is_adapter:
        raise FileNotFoundError(f"use_lora was asked but {folder / ADAPTER_CONFIG_FILE} does not exist")
    base = Path(base_model_path) if base_model_path else (adapter_base_model(folder) if is_adapter else folder)
    check_model_folder(base)
    tokenizer_folder = folder if (folder / VOCAB_FILE).is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(check_tokenizer_folder(tokenizer_folder), local_files_only=True)

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype if dtype is not None else default_dtype(device)
    load_kwargs = {"dtype": dtype, "local_files_only": True}
    if device_map is not None:
        load_kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(base, **load_kwargs)
    if device_map is None:
        model.to(device)
    if is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, folder, is_trainable=False)
    return model.eval(), tokenizer

