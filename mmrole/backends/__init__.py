"""Backends: local Qwen-VL (`hf`) and any OpenAI-compatible endpoint (`openai`)."""

from .base import Backend, BackendError, ChatRequest, ChatResult, GenerationParams, Part

__all__ = ["Backend", "BackendError", "ChatRequest", "ChatResult", "GenerationParams", "Part", "make_backend"]


def make_backend(name: str, **options) -> Backend:
    """A backend by name: "hf" (mmrole.backends.hf.HFBackend) or "openai"
    (mmrole.backends.openai.OpenAIBackend); options go to its constructor. Imported lazily so
    that the openai backend never loads torch."""
    if name == "hf":
        from .hf import HFBackend

        return HFBackend(**options)
    if name == "openai":
        from .openai import OpenAIBackend

        return OpenAIBackend(**options)
    raise ValueError(f"unknown backend {name!r}; expected 'hf' or 'openai'")
