"""The package layout shows the pipeline: the import graph of mmrole/ (every import, also those inside functions)
has no cycle, and a stage imports only itself and the stages below it:

    common  <-  qwen_vl  <-  backends  <-  data | finetune | eval | serve  <-  demo | app

data, finetune, eval and serve are siblings: none imports another (each needs only the shared pieces below it), so
each can be read, tested and changed on its own. demo runs the whole pipeline, and app (the web pages) shows data,
evaluation and serving to people: both sit on top, siblings again."""

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "mmrole"
RANK = {"common": 0, "qwen_vl": 1, "backends": 2, "data": 3, "finetune": 3, "eval": 3, "serve": 3, "demo": 4, "app": 4}
# Modules outside the stage folders: the package itself (it registers qwen_vl, and the top may import anything),
# and `python -m mmrole.tiny`, the command of demo/tiny.py.
OUTSIDE = {"mmrole": ("package", 5), "mmrole.tiny": ("demo", RANK["demo"])}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """{module: the mmrole modules it imports}, from every import statement of every file of the package."""
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:  # `from pkg import module` imports the module
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[module] = {target for target in targets if target in files and target != module}
    return graph


def stage_of(module: str) -> str:
    return OUTSIDE[module][0] if module in OUTSIDE else module.split(".")[1]


def rank_of(module: str) -> int:
    return OUTSIDE[module][1] if module in OUTSIDE else RANK.get(stage_of(module), -1)


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as [a, b, ..., a], or [] when there is none."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(module: str) -> List[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return []


def test_every_module_belongs_to_a_stage():
    graph = import_graph()
    assert "mmrole.qwen_vl.generation.chat" in graph and "mmrole.eval.cli" in graph  # the walk found the tree
    assert sorted(m for m in graph if rank_of(m) < 0) == []


def test_the_import_graph_has_no_cycle():
    assert find_cycle(import_graph()) == []


def test_stages_import_only_themselves_and_the_stages_below():
    graph = import_graph()
    upward = [f"{module} imports {target}" for module, targets in sorted(graph.items()) for target in sorted(targets)
              if stage_of(module) != stage_of(target) and rank_of(target) >= rank_of(module)]
    assert upward == []


def test_the_checks_find_a_cycle_and_an_upward_import():
    """The checks themselves can fail: on a made-up graph with a cycle and with common importing eval."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    assert rank_of("mmrole.common.store") < rank_of("mmrole.eval.files")
    assert stage_of("mmrole.data.raw") != stage_of("mmrole.eval.files") and rank_of("mmrole.data.raw") == rank_of(
        "mmrole.eval.files")
