"""The judge prompt and system prompts against the protocol document in ../shared (the role-play
prompt is checked against the published test samples in test_build_data.py)."""

import pytest

from mmrole.common import prompts
from mmrole.common.metrics import METRIC_NAMES


@pytest.fixture(scope="module")
def protocol(mmrole_data):
    path = mmrole_data.parent / "docs" / "mmrole_protocol.md"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path.read_text(encoding="utf-8")


def _code_blocks(text):
    """Contents of the fenced blocks, with the fence's own indentation removed."""
    blocks, current, indent = [], None, 0
    for line in text.split("\n"):
        if line.strip() == "```":
            if current is None:
                current, indent = [], len(line) - len(line.lstrip())
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line[indent:])
    return blocks


def test_system_prompts_match_protocol(protocol):
    blocks = _code_blocks(protocol)
    assert prompts.ROLEPLAY_SYSTEM in blocks
    assert prompts.EVALUATOR_SYSTEM in blocks


@pytest.mark.parametrize(
    "role, script, other_role, role_script, other_script, the_other",
    [
        ("Hulk", "The Avengers", "Star-Lord", "Hulk from The Avengers", "Star-Lord from The Avengers", "Star-Lord"),
        ("孙悟空", "西游记", "a curious human", "孙悟空 from 西游记", "a curious human", "the curious human"),
        (
            "Maya Patel",
            "Hypothetical Characters",
            'Elizabeth "Lizzy" Thompson',
            "Maya Patel, a person who is one of the Hypothetical Characters,",
            'Elizabeth "Lizzy" Thompson, a person who is one of the Hypothetical Characters,',
            'Elizabeth "Lizzy" Thompson',
        ),
    ],
)
def test_judge_prompt_is_the_protocol_template(protocol, role, script, other_role, role_script, other_script, the_other):
    blocks = _code_blocks(protocol)
    template = next(b for b in blocks if b.startswith("## **[Question Start]**"))
    task_template = next(b for b in blocks if b.startswith("The task instruction"))
    aspects = dict(
        (line.split(":")[0], line) for line in next(b for b in blocks if b.startswith("Instruction Adherence")).split("\n")
    )
    assert list(aspects) == list(METRIC_NAMES)
    question, answer, truth = "Q {x} with braces\n\nand lines", "A's answer", "B ground truth"
    task = (
        task_template.replace("ROLE_SCRIPT", role_script).replace("OTHER_SCRIPT", other_script).replace("ROLE", role)
    )
    for metric in METRIC_NAMES:
        aspect = aspects[metric].replace("THE_OTHER", the_other).replace("ROLE", role)
        expected = (
            template.replace("QUESTION", question, 1)
            .replace("\nA\n", f"\n{answer}\n", 1)
            .replace("\nB\n", f"\n{truth}\n", 1)
            .replace("TASK", task, 1)
            .replace("ASPECT", aspect, 1)
        )
        got = prompts.judge_prompt(
            question=question, answer_a=answer, answer_b=truth, role=role, script=script, other_role=other_role, metric=metric
        )
        assert got == expected, metric


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(KeyError, match="Humour"):
        prompts.metric_aspect("Humour", "Hulk", "a curious human")


def test_image_info_block_punctuation():
    block = prompts.image_info_block("Iron Man", "Destroyed Avengers compound", "老爹古董店。")
    assert block == (
        "The auxiliary information of the image is as follows:\n"
        " - Character information: Iron Man\n"
        " - Place information: Destroyed Avengers compound.\n"
        " - Scene information: 老爹古董店。"
    )
    assert prompts.image_info_block("", " ", "") is None


def test_language_of_script():
    assert prompts.language_of("西游记") == "Chinese"
    assert prompts.language_of("the Renaissance period") == "English"
