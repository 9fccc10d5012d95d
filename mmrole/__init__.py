"""MMRole: multimodal role-playing agents: data construction, fine-tuning and evaluation.

`import mmrole` registers the project's Qwen-VL-Chat implementation (`mmrole.qwen_vl`) with
transformers' Auto classes, so `AutoTokenizer/AutoModelForCausalLM.from_pretrained(folder)` load a
Qwen-VL-Chat-format folder. The registration waits until transformers itself is imported: scripts
that never touch a model (data construction, results, reports) do not pay for torch and
transformers at start-up.
"""

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


def _register_qwen_vl() -> None:
    """Import mmrole.qwen_vl, whose import registers the `qwen` model type (idempotent)."""
    package = sys.modules.get("mmrole.qwen_vl")
    spec = getattr(package, "__spec__", None)
    if package is not None and getattr(spec, "_initializing", False):
        return  # mmrole.qwen_vl itself imported transformers; it registers when it finishes
    import mmrole.qwen_vl  # noqa: F401


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """One-shot import hook: runs the registration right after `transformers` is imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _register_qwen_vl()

        spec.loader.exec_module = exec_module
        return spec


if "transformers" in sys.modules:
    _register_qwen_vl()
elif not any(isinstance(finder, _RegisterAfterTransformers) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTransformers())
