"""Instruction samples: what a raw dialogue becomes for training and testing (protocol §2).

One dialogue gives one instruction sample per target turn, with the id `<dialogue id>_<turn index>`:
  comment     the character's monologue (turn 1) answering the question (turn 0);
  human-role  every character turn (odd turns), the human opening;
  inter-role  every turn, from the speaking character's point of view; turn 0 is an opening line.
A sample's prompt is the protocol's role-play prompt (mmrole.common.prompts); it is written as a record of the
published test schema (`test_record`) or of Qwen-VL's fine-tuning format (`train_record`). Sample ids name their
dialogue and turn (`split_sample_id`); a file of them (`read_test_ids`) fixes the official split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Tuple

from ..common.list_format import from_list_format
from ..common.prompts import CURIOUS_HUMAN, ROLEPLAY_SYSTEM, roleplay_prompt
from ..common.store import PathLike
from .raw import Annotations, Dialogue


@dataclass(frozen=True)
class InstructionSample:
    id: str  # <dialogue id>_<turn index>
    dialogue_id: str
    type: str
    split: str
    image: str
    prompt: str
    target: str
    role: str
    script: str
    other_role: str  # `a curious human` or the partner's name
    turn_index: int

    def test_record(self) -> dict:
        """The published test schema (key order as in the published files)."""
        return {
            "id": self.id,
            "system": ROLEPLAY_SYSTEM,
            "image": self.image,
            "conversations": [{"from": "user", "value": self.prompt}, {"from": "assistant", "value": self.target}],
            "role": self.role,
            "script": self.script,
            "other_role": self.other_role,
        }

    def train_record(self, image_prefix: str = "images/") -> dict:
        """Qwen-VL's fine-tuning format; the image path is image_prefix + the sample's image. The
        role-play system prompt goes with it so training sees what inference sends (finetune.py
        honours a sample's `system`; the original trained every sample with Qwen's default)."""
        return {
            "id": self.id,
            "system": ROLEPLAY_SYSTEM,
            "conversations": [
                {"from": "user", "value": from_list_format([{"image": image_prefix + self.image}, {"text": self.prompt}])},
                {"from": "assistant", "value": self.target},
            ],
        }


def dialogue_sample(dialogue: Dialogue, index: int, annotations: Annotations, profiles: Mapping[str, str]) -> InstructionSample:
    """The sample whose target is turn `index` (one of dialogue.sample_indices())."""
    if index not in dialogue.sample_indices():
        raise ValueError(f"{dialogue.path}: {dialogue.id}: turn {index} is not a target turn of a "
                         f"{dialogue.type} dialogue of {len(dialogue.turns)} turns")
    target = dialogue.turns[index]
    if dialogue.type == "inter-role":
        role = target.speaker
        partner = dialogue.partner.name if role == dialogue.owner.name else dialogue.owner.name
    else:
        role, partner = dialogue.owner.name, None
    prompt = roleplay_prompt(
        role=role,
        script=dialogue.owner.script,
        profiles=profiles,
        partner=partner,
        image_info=annotations.get(dialogue.image),
        history=[(t.speaker, t.text) for t in dialogue.turns[: max(index - 1, 0)]],
        words=dialogue.turns[index - 1].text if index > 0 else None,
    )
    return InstructionSample(
        id=f"{dialogue.id}_{index}", dialogue_id=dialogue.id, type=dialogue.type, split=dialogue.split,
        image=dialogue.image, prompt=prompt, target=target.text, role=role, script=dialogue.owner.script,
        other_role=partner if partner is not None else CURIOUS_HUMAN, turn_index=index,
    )


def dialogue_samples(dialogue: Dialogue, annotations: Annotations, profiles: Mapping[str, str]) -> List[InstructionSample]:
    return [dialogue_sample(dialogue, i, annotations, profiles) for i in dialogue.sample_indices()]


def split_sample_id(sample_id: str) -> Tuple[str, int]:
    """`<dialogue id>_<turn index>` -> (dialogue id, turn index); ValueError when it is not one."""
    dialogue_id, _, index = sample_id.rpartition("_")
    if not dialogue_id or not index.isdigit():
        raise ValueError(f"{sample_id!r} is not <dialogue id>_<turn index>")
    return dialogue_id, int(index)


def read_test_ids(path: PathLike) -> List[str]:
    """One sample id a line; blank lines and lines starting with # are ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
