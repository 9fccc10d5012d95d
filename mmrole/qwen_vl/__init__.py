"""Qwen-VL-Chat on current transformers, shaped like a transformers model folder.

Importing this package registers the `qwen` model type with the Auto classes, so that
`AutoConfig/AutoTokenizer/AutoModelForCausalLM.from_pretrained(folder)` load a Qwen-VL-Chat-format
folder with this implementation (no `trust_remote_code`; downloaded .py files are never executed).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .chat_format import decode_tokens, get_stop_words_ids, make_context
from .configuration_qwen import QWenConfig
from .image_processing_qwen import load_image, preprocess_image, preprocess_images
from .modeling_qwen import QWenLMHeadModel, QWenModel
from .tokenization_qwen import QWenTokenizer, register_with_auto_tokenizer

AutoConfig.register("qwen", QWenConfig, exist_ok=True)
AutoModel.register(QWenConfig, QWenModel, exist_ok=True)
AutoModelForCausalLM.register(QWenConfig, QWenLMHeadModel, exist_ok=True)
register_with_auto_tokenizer()  # by class name only: see its docstring

__all__ = [
    "QWenConfig",
    "QWenLMHeadModel",
    "QWenModel",
    "QWenTokenizer",
    "decode_tokens",
    "get_stop_words_ids",
    "load_image",
    "make_context",
    "preprocess_image",
    "preprocess_images",
]
