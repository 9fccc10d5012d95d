"""Qwen-VL-Chat on current transformers, shaped like a transformers model folder.

Importing this package registers the `qwen` model type with the Auto classes, so that
`AutoConfig/AutoTokenizer/AutoModelForCausalLM.from_pretrained(folder)` load a Qwen-VL-Chat-format
folder with this implementation (no `trust_remote_code`; downloaded .py files are never executed).
"""

from transformers import AutoConfig

from .configuration_qwen import QWenConfig

AutoConfig.register("qwen", QWenConfig, exist_ok=True)

__all__ = ["QWenConfig"]
