"""The prompts that generate MMRole-Data: character profiles and the three kinds of dialogues.

The paper did not publish its generation prompts; these are ours, written to produce data in the
released shapes (see protocol §1): detailed profiles with the five fields of
`detailed_profiles/*.json`, condensed markdown profiles with five `### ` sections as in
`profiles.json`, hypothetical people with the fields of `meta_info_hypo/*.json`, and dialogues as
JSON lists of `{role, value}` turns. Every generated record carries PROMPT_VERSION (and the model),
so data made with different prompts can be told apart; bump it whenever a prompt's wording changes.

What is *not* ours: COMMENT_QUESTIONS, the fixed pool of commentary questions, taken verbatim from
the released dialogues (every commentary question there is one of these 20; a test checks it), and
the auxiliary-information block of character-related images, which is the protocol's own
(`mmrole.common.prompts.image_info_block`), so generation and role-play prompts describe an image alike.

Each builder returns the user text; the system prompts are GENERATOR_SYSTEM (profiles) and
DIALOGUE_SYSTEM (dialogues). `parse_json_reply` reads a JSON payload from a reply (tolerating a
```json fence) and raises MalformedResponse otherwise, so the client retries.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Mapping, Optional, Sequence

from ...backends.client import MalformedResponse
from ...common.prompts import HYPOTHETICAL_SCRIPT, image_info_block

PROMPT_VERSION = "mmrole-gen-1"

COMMENT_QUESTIONS: Dict[str, tuple] = {
    "English": (
        "Upon seeing this image, what goes through your mind?",
        "What are your thoughts when you see this image?",
        "What feelings does this scene evoke in you?",
        "Viewing this scene, what emotional response do you have?",
        "What comes to your mind when you look at this image?",
        "When you look at this image, what thoughts come to your mind?",
        "How does observing this photo make you feel?",
        "What emotions arise in you upon viewing this scene?",
        "How do you react emotionally to this scene?",
        "What does this picture prompt you to think about?",
    ),
    "Chinese": (
        "看到这张照片，你的第一反应是什么？",
        "观看这个画面，你感觉如何？",
        "这个场景引发了你什么样的思考？",
        "这张图让你联想到了什么？",
        "观察这幅画面，你有何感受？",
        "看到这一场景，你内心的想法是什么？",
        "这幅图像触发了你的哪些想法或情绪？",
        "这个画面给你留下了什么样的印象？",
        "面对这样的场景，你心中涌现了哪些感想？",
        "你对这张照片有什么看法？",
    ),
}

DETAILED_FIELDS = ("introduction", "personality", "experience", "relationship", "catchphrase")
META_FIELDS = ("name", "gender", "age", "origin", "personality", "experience")
# The section headings of the released condensed profiles, per language.
PROFILE_SECTIONS = {
    "English": ("Brief Introduction", "Personality", "Life Story", "Main Interpersonal Relationships", "Catchphrases"),
    "Chinese": ("简要介绍", "性格特点", "人物经历", "人际关系", "名言"),
}

GENERATOR_SYSTEM = (
    "You are a meticulous character analyst and writer. You describe characters faithfully to their "
    "sources, never invent facts about real or fictional people beyond what the source supports, and "
    "answer exactly in the format requested."
)
DIALOGUE_SYSTEM = (
    "You are a skilled screenwriter who writes in-character dialogue about images. Every line sounds "
    "like the character who says it: their personality, knowledge, tone and catchphrases. Characters "
    "look at the given image and talk about what is really in it. Nobody in the dialogue is an AI "
    "assistant, and nothing outside the requested format is written."
)


def _who(name: str, script: str) -> str:
    if script == HYPOTHETICAL_SCRIPT:
        return f"{name}, an invented person"
    return f"{name} from {script}"


def _json_fields(fields: Sequence[str]) -> str:
    return "{" + ", ".join(f'"{f}": "..."' for f in fields) + "}"


# --- profiles ------------------------------------------------------------------------------------

def detailed_profile_prompt(name: str, script: str, language: str, source_text: str) -> str:
    """Source text (an article, or a hypothetical person's meta information) -> the 5-field profile."""
    return (
        f"Below is source material about {_who(name, script)}.\n\n"
        f"[Source Start]\n{source_text.strip()}\n[Source End]\n\n"
        f"Based only on this material, write a detailed profile of {name} in {language}, with five fields:\n"
        "- introduction: who they are, their background and abilities (one or two paragraphs);\n"
        "- personality: their main character traits, each with an example from their story;\n"
        "- experience: the key events of their life, in order;\n"
        "- relationship: the people who matter to them and how (a list);\n"
        "- catchphrase: lines they typically say, quoted (a numbered list).\n"
        f"Answer with one JSON object and nothing else: {_json_fields(DETAILED_FIELDS)}"
    )


def condensed_profile_prompt(name: str, script: str, language: str, detailed: Mapping[str, str]) -> str:
    """The detailed profile -> the condensed markdown profile of profiles.json."""
    sections = PROFILE_SECTIONS[language]
    body = "\n\n".join(f"[{field}]\n{str(detailed.get(field, '')).strip()}" for field in DETAILED_FIELDS)
    outline = "\n".join(f"### {s}" for s in sections)
    return (
        f"Here is a detailed profile of {_who(name, script)}:\n\n{body}\n\n"
        f"Condense it into a profile of about 300 {'characters' if language == 'Chinese' else 'words'} in "
        f"{language}, in markdown, with exactly these five sections in this order:\n{outline}\n"
        "Keep the facts, the character's voice and 3-5 catchphrases; use short lists where the detailed "
        "profile has lists. Answer with the markdown profile only."
    )


def hypothetical_people_prompt(count: int, existing_names: Sequence[str]) -> str:
    """Meta information for `count` invented people, diverse and unlike the existing ones."""
    avoid = ", ".join(existing_names) if existing_names else "(none yet)"
    return (
        f"Invent {count} ordinary but distinctive people who could talk about photos of everyday life. "
        "Make them diverse in gender, age (18-80), country of origin, occupation and temperament. "
        f"Do not reuse these names: {avoid}.\n"
        "For each person give: name (first and last name), gender, age (a number as text), origin "
        "(city, country), personality (a short phrase) and experience (one sentence about their life "
        "and work).\n"
        f"Answer with a JSON list of {count} objects and nothing else: [{_json_fields(META_FIELDS)}, ...]"
    )


def meta_source_text(meta: Mapping[str, str]) -> str:
    """A hypothetical person's meta information as the source text of detailed_profile_prompt."""
    return "\n".join(f"{field}: {meta.get(field, '')}" for field in META_FIELDS)


# --- dialogues -----------------------------------------------------------------------------------

def _profile_block(name: str, profile: str) -> str:
    return f"[Profile of {name} Start]\n{profile.strip()}\n[Profile of {name} End]"


def _image_block(image_info: Optional[Mapping[str, str]]) -> str:
    if not image_info:
        return ""
    block = image_info_block(image_info.get("role_info", ""), image_info.get("place_info", ""),
                             image_info.get("scene_info", ""))
    return f"{block}\n\n" if block else ""


def comment_prompt(name: str, script: str, language: str, profile: str, question: str,
                   image_info: Optional[Mapping[str, str]] = None) -> str:
    """One monologue of the character answering the commentary question about the image."""
    return (
        f"{_profile_block(name, profile)}\n\n{_image_block(image_info)}"
        f"A curious human shows {_who(name, script)} the given image and asks: \"{question}\"\n"
        f"Write {name}'s answer in {language}: a vivid monologue of one to three paragraphs that describes "
        f"what {name} sees in the image and what it stirs in them, in {name}'s own tone, manner and "
        f"vocabulary, drawing on their experiences and relationships.\n"
        f"Answer with {name}'s words only: no name label, no quotation marks around the whole answer, "
        "no notes."
    )


def human_role_prompt(name: str, script: str, language: str, profile: str, rounds: int,
                      image_info: Optional[Mapping[str, str]] = None) -> str:
    """A multi-turn dialogue: a curious human opens, the character answers, `rounds` times."""
    return (
        f"{_profile_block(name, profile)}\n\n{_image_block(image_info)}"
        f"Write a conversation in {language} between a curious human and {_who(name, script)} about the "
        f"given image. The human speaks first; then they alternate, {rounds} turns each "
        f"({2 * rounds} turns in all). The human asks about the image, about {name}'s feelings and about "
        f"their life; {name} answers in character, grounded in what the image shows.\n"
        "Answer with a JSON list of turns and nothing else, the human's turns with role \"human\":\n"
        f'[{{"role": "human", "value": "..."}}, {{"role": "{name}", "value": "..."}}, ...]'
    )


def inter_role_prompt(name: str, partner: str, script: str, language: str, profiles: Mapping[str, str],
                      rounds: int, image_info: Optional[Mapping[str, str]] = None) -> str:
    """A multi-turn dialogue between two characters of the same script; the partner opens."""
    return (
        f"{_profile_block(name, profiles[name])}\n\n{_profile_block(partner, profiles[partner])}\n\n"
        f"{_image_block(image_info)}"
        f"Write a conversation in {language} between {_who(partner, script)} and {name} about the given "
        f"image. {partner} speaks first, raising a question or a comment about the image; then they "
        f"alternate, {rounds} turns each ({2 * rounds} turns in all). Each stays in character and "
        "refers to what the image shows and to their shared history.\n"
        "Answer with a JSON list of turns and nothing else:\n"
        f'[{{"role": "{partner}", "value": "..."}}, {{"role": "{name}", "value": "..."}}, ...]'
    )


# --- replies -------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def parse_json_reply(text: str) -> Any:
    """The JSON payload of a reply; a ```json fence around it is accepted. MalformedResponse otherwise."""
    match = _FENCE.match(text)
    payload = match.group(1) if match else text.strip()
    try:
        return json.loads(payload)
    except json.JSONDecodeError as e:
        raise MalformedResponse(f"reply is not the requested JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
