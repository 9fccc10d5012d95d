"""MMRole: multimodal role-playing agents: data construction, fine-tuning and evaluation."""

__version__ = "0.1.0"
