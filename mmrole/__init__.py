"""MMRole: multimodal role-playing agents: data construction, fine-tuning and evaluation.

`import mmrole` registers the project's Qwen-VL-Chat implementation with transformers' Auto
classes (see mmrole/qwen_vl/__init__.py).
"""

__version__ = "0.1.0"

from . import qwen_vl  # noqa: E402,F401  (registration is the point of this import)
