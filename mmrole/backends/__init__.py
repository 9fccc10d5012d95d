"""Backends: local Qwen-VL (`hf`) and any OpenAI-compatible endpoint (`openai`)."""

from .base import Backend, BackendError, ChatRequest, ChatResult, GenerationParams, Part

__all__ = ["Backend", "BackendError", "ChatRequest", "ChatResult", "GenerationParams", "Part"]
