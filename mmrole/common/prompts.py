"""The MMRole protocol strings: role-play prompts, system prompts and the judge prompt.

Released checkpoints (MMRole-Agent, MMRole-Eval_RM) were trained on exactly these bytes, so every
string here is protocol: change nothing without a test against the published data
(`tests/common/test_prompts.py`, `tests/data/test_build.py`). No other module may spell these strings.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence, Tuple

# --- system prompts ------------------------------------------------------------------------------

ROLEPLAY_SYSTEM = (
    "You are a dedicated role-playing assistant designed to immerse yourself fully in the "
    "character you are portraying."
)
EVALUATOR_SYSTEM = (
    "You are an objective and precise evaluator, specializing in rigorously assessing the "
    "role-playing and multimodal understanding abilities of various models."
)
# Qwen-VL-Chat's own default; the original fine-tuning script trained every sample with it.
DEFAULT_SYSTEM = "You are a helpful assistant."

# --- role-play prompt (an instruction sample's user turn) ---------------------------------------

HYPOTHETICAL_SCRIPT = "Hypothetical Characters"
CURIOUS_HUMAN = "a curious human"  # `other_role` of comment and human-role samples
HUMAN_SPEAKER = "human"  # speaker name of the human's turns in the raw dialogues

BLOCK_SEPARATOR = "\n\n\n"
_CJK = re.compile(r"[\u4e00-\u9fff]")
# Place and scene information get a full stop unless they already end like a sentence.
_SENTENCE_END = (".", "!", "?", "。", "！", "？", "…")


def language_of(script: str) -> str:
    """Characters of a script written in Chinese speak Chinese; all others English."""
    return "Chinese" if _CJK.search(script) else "English"


def _who(name: str, script: str) -> str:
    if script == HYPOTHETICAL_SCRIPT:
        return f"{name}, a person who is one of the {HYPOTHETICAL_SCRIPT}"
    return f"{name} from {script}"


def _who_partner(name: str, script: str) -> str:
    if script == HYPOTHETICAL_SCRIPT:
        # The trailing comma is in the data: "... talking with P, another person ..., about".
        return f"{name}, another person who is one of the {HYPOTHETICAL_SCRIPT},"
    return f"{name} from {script}"


def image_info_block(role_info: str = "", place_info: str = "", scene_info: str = "") -> Optional[str]:
    """The auxiliary-information block of a character-related image, or None when all are empty."""
    lines = []
    role_info, place_info, scene_info = (s.strip() for s in (role_info or "", place_info or "", scene_info or ""))
    if role_info:
        lines.append(f" - Character information: {role_info}")
    for label, value in (("Place", place_info), ("Scene", scene_info)):
        if value:
            if not value.endswith(_SENTENCE_END):
                value += "."
            lines.append(f" - {label} information: {value}")
    if not lines:
        return None
    return "The auxiliary information of the image is as follows:\n" + "\n".join(lines)


def roleplay_prompt(
    *,
    role: str,
    script: str,
    profiles: Mapping[str, str],
    partner: Optional[str] = None,
    image_info: Optional[Mapping[str, str]] = None,
    history: Sequence[Tuple[str, str]] = (),
    words: Optional[str] = None,
) -> str:
    """Build the user prompt that asks ROLE to answer (or open) a conversation about an image.

    partner: None when ROLE talks with the curious human, else the partner character's name
        (a character of the same script).
    image_info: the annotation of a character-related image ({role_info, place_info, scene_info})
        or None for other images (e.g. MS-COCO).
    history: the (speaker, text) turns before the turn being answered; speaker is `human` or the
        character's name as in the data.
    words: the turn ROLE answers; None only for an inter-role opening (ROLE speaks first).
    """
    language = language_of(script)
    partner_who = CURIOUS_HUMAN if partner is None else _who_partner(partner, script)
    other = "the curious human" if partner is None else partner
    blocks = [
        f"Please step into the shoes of {_who(role, script)}. Imagine you are talking with "
        f"{partner_who} about the given image. This requires a deep understanding of the "
        "character's background, including their personality, experiences, abilities, and "
        "relationships.",
        f"The description of {role} is as follows:\n{profiles[role]}",
    ]
    if partner is not None:
        blocks.append(f"The description of {partner} is as follows:\n{profiles[partner]}")
    if image_info:
        info = image_info_block(
            image_info.get("role_info", ""), image_info.get("place_info", ""), image_info.get("scene_info", "")
        )
        if info:
            blocks.append(info)
    if history:
        lines = "\n".join(f"[{speaker}]: {text}" for speaker, text in history)
        blocks.append(f"The conversation history between {role} and {other} is as follows:\n{lines}")
    if words is None:
        if partner is None:
            raise ValueError(f"{role}: only an inter-role dialogue may open without words to answer")
        blocks.append(
            f"Please initiate the conversation with {partner} in {language} using the distinctive "
            f"tone, manner and vocabulary of {role}, raising questions or commenting about the image."
        )
    else:
        blocks.append(
            f"Please respond to the following words of {other} about the image in {language} using "
            f"the distinctive tone, manner and vocabulary of {role}:\n{words}"
        )
    return BLOCK_SEPARATOR.join(blocks)


# --- judge prompt (MMRole-Eval) ------------------------------------------------------------------

# Metric name -> aspect description; ROLE and THE_OTHER are filled in per sample.
METRIC_ASPECTS = {
    "Instruction Adherence": (
        "Instruction Adherence: Do the responses accurately adhere to the task instruction, "
        "directly role-playing as {role} and only including words that {role} should say, without "
        "any additional explanatory prefixes or suffixes?"
    ),
    "Fluency": "Fluency: Are the responses grammatically correct and smoothly articulated?",
    "Coherency": (
        "Coherency: Do the responses maintain a coherent thread of dialogue without contradicting "
        "earlier parts of the conversation or previously established facts?"
    ),
    "Image-Text Relevance": (
        "Image-Text Relevance: Are the responses closely related to the visual content of the image?"
    ),
    "Response Accuracy": (
        "Response Accuracy: Do the responses accurately answer {the_other}'s words or appropriately "
        "initiate a conversation based on the image?"
    ),
    "Personality Consistency": (
        "Personality Consistency: Do the responses accurately and sufficiently reflect the "
        "personality of {role}?"
    ),
    "Knowledge Consistency": (
        "Knowledge Consistency: Are the responses consistent with the factual knowledge that {role} "
        "should possess, including experiences, abilities, and relationships?"
    ),
    "Tone Consistency": (
        "Tone Consistency: Do the responses maintain a consistent tone that aligns with {role}'s "
        "typical manner of speaking and catchphrases, rather than resembling the style of AI "
        "assistants?"
    ),
}

_JUDGE_TEMPLATE = """## **[Question Start]**

{question}

## **[Question End]**


## **[Model A's Response Start]**

{answer_a}

## **[Model A's Response End]**


## **[Model B's Response Start]**

{answer_b}

## **[Model B's Response End]**


## **[Instruction]**

{task}

Please evaluate the following aspect of each model's response:
{aspect}

Please provide a brief qualitative evaluation for the relative performance of the two models, followed by paired quantitative scores from 1 to 10, where 1 indicates poor performance and 10 indicates excellent performance.

The output should be in the following format:
{{Qualitative Evaluation}}, [Scores]: ({{the score of Model A}}, {{the score of Model B}})

Please ensure that your evaluations are unbiased and that the order in which the responses were presented does not affect your judgment."""


def _judge_who(name: str, script: str) -> str:
    if script == HYPOTHETICAL_SCRIPT:
        return f"{name}, a person who is one of the {HYPOTHETICAL_SCRIPT},"
    return f"{name} from {script}"


def judge_task(role: str, script: str, other_role: str) -> str:
    """The TASK sentence: what the two judged models were asked to do."""
    other_script = CURIOUS_HUMAN if other_role == CURIOUS_HUMAN else _judge_who(other_role, script)
    return (
        f"The task instruction of the two models is to directly role-play as {_judge_who(role, script)} "
        f"and talk with {other_script} about the given image using the distinctive tone, manner and "
        f"vocabulary of {role}."
    )


def metric_aspect(metric: str, role: str, other_role: str) -> str:
    if metric not in METRIC_ASPECTS:
        raise KeyError(f"unknown metric {metric!r}; expected one of {list(METRIC_ASPECTS)}")
    the_other = "the curious human" if other_role == CURIOUS_HUMAN else other_role
    return METRIC_ASPECTS[metric].format(role=role, the_other=the_other)


def judge_prompt(
    *, question: str, answer_a: str, answer_b: str, role: str, script: str, other_role: str, metric: str
) -> str:
    """The judge's user prompt for one metric. A is the evaluated answer, B the ground truth."""
    return _JUDGE_TEMPLATE.format(
        question=question,
        answer_a=answer_a,
        answer_b=answer_b,
        task=judge_task(role, script, other_role),
        aspect=metric_aspect(metric, role, other_role),
    )
