"""`import mmrole` registers Qwen-VL with the Auto classes (the classes register where they are defined; the
package decides when: once transformers is imported), in every import order; model-free modules must not pull in
torch or transformers; and the scripts the tests start run this checkout's code."""

import subprocess
import sys

import pytest


def _run(code: str, repo_root) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


# Everything that never runs a model: scripts made of these start without torch and transformers (seconds each).
MODEL_FREE = ("mmrole.common.prompts", "mmrole.common.metrics", "mmrole.common.store", "mmrole.common.list_format",
              "mmrole.common.cli", "mmrole.common.problems", "mmrole.common.images", "mmrole.common.progress",
              "mmrole.backends", "mmrole.backends.endpoint", "mmrole.backends.client", "mmrole.data.raw",
              "mmrole.data.samples", "mmrole.data.build", "mmrole.data.filter", "mmrole.data.generate.profiles",
              "mmrole.data.generate.dialogues", "mmrole.eval.files", "mmrole.eval.run", "mmrole.eval.answer",
              "mmrole.eval.review", "mmrole.eval.results", "mmrole.eval.report", "mmrole.eval.agreement",
              "mmrole.eval.rm_data", "mmrole.eval.cli", "mmrole.demo.summary")


def test_model_free_modules_do_not_import_torch(repo_root):
    out = _run(f"import sys, mmrole, {', '.join(MODEL_FREE)}\n"
               "print('torch' in sys.modules, 'transformers' in sys.modules)", repo_root)
    assert out == "False False"


AUTO = "from transformers import AutoConfig, AutoTokenizer, AutoModelForCausalLM"
# Each order runs in a fresh interpreter that loads a model (about 5 s): the quick suite keeps the documented one.
LATER_ORDER = pytest.mark.slow


@pytest.mark.parametrize("imports", [
    pytest.param(f"import mmrole\n{AUTO}", id="mmrole-first"),
    pytest.param(f"import transformers\nimport mmrole\n{AUTO}", id="transformers-first", marks=LATER_ORDER),
    pytest.param(f"from mmrole.qwen_vl.modeling_qwen import QWenLMHeadModel\n{AUTO}", id="submodule-first",
                 marks=LATER_ORDER),
    pytest.param(f"import mmrole.qwen_vl.generation.continuous\n{AUTO}", id="generation-first", marks=LATER_ORDER),
    pytest.param(f"{AUTO}\nfrom mmrole.qwen_vl.tokenization_qwen import QWenTokenizer", id="auto-classes-first",
                 marks=LATER_ORDER),
])
def test_auto_classes_load_a_qwen_folder_after_import_mmrole(imports, repo_root, qwen_reference):
    folder = qwen_reference / "tiny-qwen-vl-chat"
    out = _run(
        f"{imports}\n"
        f"c = AutoConfig.from_pretrained({str(folder)!r})\n"
        f"t = AutoTokenizer.from_pretrained({str(folder)!r})\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(folder)!r})\n"
        "print(type(c).__name__, type(t).__name__, type(m).__name__)",
        repo_root,
    )
    assert out.splitlines()[-1] == "QWenConfig QWenTokenizer QWenLMHeadModel"


@pytest.mark.slow  # a fresh interpreter loads a model
def test_folder_without_tokenizer_config_loads_through_config_tokenizer_class(tmp_path, repo_root, qwen_reference):
    folder = qwen_reference / "tiny-qwen-vl-chat"
    for name in ("config.json", "qwen.tiktoken"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    out = _run(
        f"import mmrole\nfrom transformers import AutoTokenizer\n"
        f"print(type(AutoTokenizer.from_pretrained({str(tmp_path)!r})).__name__)",
        repo_root,
    )
    assert out.splitlines()[-1] == "QWenTokenizer"


def test_scripts_started_by_the_tests_run_this_checkout(tmp_path, repo_root):
    """An editable install may point at another checkout of the repository: conftest puts this one first on the
    PYTHONPATH of every child process, from whatever folder it starts."""
    out = subprocess.run([sys.executable, "-c", "import mmrole; print(mmrole.__file__)"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(repo_root / "mmrole" / "__init__.py")
