"""Training data for the fine-tuning tests: JSON-lines files and short real samples from the raw MMRole-Data
snapshot (tests/finetune/)."""

import json
from pathlib import Path

from mmrole.common.prompts import ROLEPLAY_SYSTEM
from mmrole.data.raw import IN_DISTRIBUTION, load_dialogues, load_split
from mmrole.qwen_vl.tokenization_qwen import from_list_format


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def character_image_samples(mmrole_data: Path, count: int, system: str = ROLEPLAY_SYSTEM):
    """Short real samples: the opening question and the character's comment of `count` comment dialogues on
    character-related images (those present in the snapshot), image paths relative to mmrole_data."""
    raw, _ = load_split(mmrole_data, IN_DISTRIBUTION)
    dialogues = [d for d in load_dialogues(mmrole_data, raw, dialogue_types=("comment",)).dialogues
                 if d.source == "script" and (mmrole_data / "images" / d.image).is_file()]
    assert len(dialogues) >= count
    samples = []
    for dialogue in dialogues[:count]:
        question = from_list_format([{"image": "images/" + dialogue.image}, {"text": dialogue.turns[0].text}])
        samples.append({"id": dialogue.id, "system": system, "conversations": [
            {"from": "user", "value": question}, {"from": "assistant", "value": dialogue.turns[1].text}]})
    return samples
