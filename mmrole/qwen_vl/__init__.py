"""Qwen-VL-Chat on current transformers, shaped like a transformers model folder.

- configuration_qwen.py, tokenization_qwen.py, image_processing_qwen.py (pixels, and the image spans of a prompt's
  ids), modeling_qwen.py (+ modeling_qwen_visual.py: the vision tower), chat_format.py (ChatML prompts, replies)
- generation/: the chat API and continuous batching (the one engine every caller decodes with)
- loading.py: loading a local checkpoint (full or LoRA) safely

Each class is registered with transformers' Auto classes where it is defined (the configuration, tokenization and
modeling modules), so importing this package, or any of those modules, makes
`AutoConfig/AutoTokenizer/AutoModelForCausalLM.from_pretrained(folder)` load a Qwen-VL-Chat-format folder with this
implementation (no `trust_remote_code`; downloaded .py files are never executed). `import mmrole` alone does it
too, once transformers is imported (see mmrole/__init__.py).
"""

from .chat_format import decode_tokens, get_stop_words_ids, make_context
from .configuration_qwen import QWenConfig
from .image_processing_qwen import load_image, preprocess_image, preprocess_images
from .modeling_qwen import QWenLMHeadModel, QWenModel
from .tokenization_qwen import QWenTokenizer

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
