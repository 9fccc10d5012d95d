"""Backends: local Qwen-VL (`hf`), any OpenAI-compatible endpoint (`openai`) and any local image-text-to-text
checkpoint through transformers (`transformers`)."""

from .base import Backend, BackendError, ChatRequest, ChatResult, GenerationParams, Part

__all__ = ["Backend", "BackendError", "ChatRequest", "ChatResult", "GenerationParams", "Part", "make_backend"]


def make_backend(name: str, **options) -> Backend:
    """A backend by name: "hf" (mmrole.backends.hf.HFBackend), "openai" (mmrole.backends.openai.OpenAIBackend)
    or "transformers" (mmrole.backends.transformers.TransformersBackend); options go to its constructor.
    Imported lazily so that the openai backend never loads torch."""
    if name == "hf":
        from .hf import HFBackend

        return HFBackend(**options)
    if name == "openai":
        from .openai import OpenAIBackend

        return OpenAIBackend(**options)
    if name == "transformers":
        from .transformers import TransformersBackend

        return TransformersBackend(**options)
    raise ValueError(f"unknown backend {name!r}; expected 'hf', 'openai' or 'transformers'")
