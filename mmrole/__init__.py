"""MMRole: multimodal role-playing agents: data construction, fine-tuning and evaluation.

The package is grouped the way the pipeline is; a stage imports only the stages listed before it (tested in
tests/test_layout.py):

    common/    what every stage shares: protocol prompts, metrics, journals and atomic writes, the command line
    qwen_vl/   Qwen-VL-Chat on current transformers, and generation/ (the one decoding engine)
    backends/  "answer these chat requests": a local Qwen-VL checkpoint or any OpenAI-compatible endpoint
    data/      raw MMRole-Data, instruction samples, building, filtering, and generate/ (new profiles and dialogues)
    finetune/  fine-tuning Qwen-VL-Chat into the agent and the reward model
    eval/      MMRole-Eval: answering, reviewing, results, Table 5, agreement, reward-model data
    serve/     the OpenAI-compatible server
    demo/      the demo's synthetic data, stand-in judge, summary and tiny checkpoints

`import mmrole` registers the project's Qwen-VL-Chat implementation with transformers' Auto classes, so that
`AutoConfig/AutoTokenizer/AutoModelForCausalLM.from_pretrained(folder)` load a Qwen-VL-Chat-format folder. The
classes register themselves where they are defined (mmrole/qwen_vl); what is left here is *when* that happens:
right away if transformers is already imported, else as soon as it is. Importing mmrole.qwen_vl eagerly would
cost every script torch and transformers at start-up (about 5 s of `import mmrole.qwen_vl` against 0.1 s of
`import mmrole`, measured on the development machine), scripts that never touch a model included.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


class _ImportQwenVLAfterTransformers(importlib.abc.MetaPathFinder):
    """One-shot import hook: right after `transformers` is imported, import mmrole.qwen_vl (which registers its
    classes). If mmrole.qwen_vl is what imported transformers, the partly imported package is returned and its
    modules register as they finish."""

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
            importlib.import_module("mmrole.qwen_vl")

        spec.loader.exec_module = exec_module
        return spec


if "transformers" in sys.modules:
    importlib.import_module("mmrole.qwen_vl")
elif not any(isinstance(finder, _ImportQwenVLAfterTransformers) for finder in sys.meta_path):
    sys.meta_path.insert(0, _ImportQwenVLAfterTransformers())
