"""A conversation in the chat page, and the request it sends: built exactly as inference builds one.

The page's conversation is a dialogue of MMRole-Data in the making. Its turns so far, plus the turn the model is to
say, form a raw `Dialogue`; `mmrole.data.samples.dialogue_sample` turns its last turn into the instruction sample the
data construction would make of it (role-play prompt with the profiles, the image's annotation, the conversation
history inside the prompt and the words to answer, or the inter-role opening instruction); that sample's published
test record is read back as inference reads a test file (`mmrole.eval.files.parse_sample`) and becomes the request
inference sends (`mmrole.eval.answer.answer_request`: the role-play system prompt, the image first, no chat history).
No prompt text is written here.

Modes (protocol §1): human-role, a curious human (the user) talks with the character and opens the dialogue;
inter-role, the user plays a second character of the same script, and either side may open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import List, Mapping, Optional, Tuple

from ..backends.base import ChatRequest
from ..common.list_format import from_list_format
from ..common.prompts import HUMAN_SPEAKER
from ..data.raw import Annotations, Character, Dialogue, Turn
from ..data.samples import InstructionSample, dialogue_sample
from ..eval.answer import answer_request
from ..eval.files import parse_sample

HUMAN_ROLE, INTER_ROLE = "human-role", "inter-role"
MODES = (HUMAN_ROLE, INTER_ROLE)
_ID_MARKERS = {HUMAN_ROLE: "human-role-dialogue", INTER_ROLE: "role-role-dialogue"}


class ConversationError(ValueError):
    """A turn that cannot be taken now (e.g. the human must open a human-role dialogue)."""


@dataclass(frozen=True)
class ChatImage:
    """The image of a conversation: `image` relative to `image_dir`, as a test sample names its image (a picked image
    of the data: its path under ROOT/images, which selects its annotation; an upload: its file name)."""

    image_dir: str
    image: str
    annotation: Optional[Mapping[str, str]] = None

    @property
    def path(self) -> str:
        return os.path.join(self.image_dir, self.image)


@dataclass
class Conversation:
    """mode; character: whom the model plays; partner: whom the user plays in inter-role (None in human-role);
    profiles: every profile the prompt may quote; turns: what was said so far."""

    mode: str
    character: Character
    image: ChatImage
    profiles: Mapping[str, str]
    partner: Optional[Character] = None
    turns: List[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConversationError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.mode == INTER_ROLE:
            if self.partner is None:
                raise ConversationError("an inter-role dialogue needs a second character for you to play")
            if self.partner.name == self.character.name:
                raise ConversationError(f"{self.character.name!r} cannot talk with itself: choose another character "
                                        "to play")
            if self.partner.script != self.character.script:
                raise ConversationError(f"{self.partner.name!r} is not a character of {self.character.script!r}: "
                                        "inter-role dialogues pair two characters of one script")
        elif self.partner is not None:
            raise ConversationError("a human-role dialogue has no second character")

    @property
    def user_speaker(self) -> str:
        return HUMAN_SPEAKER if self.mode == HUMAN_ROLE else self.partner.name

    def check_user_turn(self) -> None:
        """The user may speak now (turns alternate; the model answers before the user speaks again)."""
        if self.turns and self.turns[-1].speaker == self.user_speaker:
            raise ConversationError("wait for the reply before speaking again")

    def check_model_opens(self) -> None:
        """The model may open the dialogue now (only an inter-role dialogue, and only before anyone spoke)."""
        if self.mode == HUMAN_ROLE:
            raise ConversationError("in a human-role dialogue the curious human speaks first: write a message")
        if self.turns:
            raise ConversationError("the dialogue has already begun")

    def with_user_turn(self, text: str) -> "Conversation":
        """The conversation with the user's words added (ConversationError for empty words or out of turn)."""
        if not text or not text.strip():
            raise ConversationError("the message is empty")
        self.check_user_turn()
        return replace(self, turns=[*self.turns, Turn(self.user_speaker, text.strip())])

    def with_reply(self, text: str) -> "Conversation":
        return replace(self, turns=[*self.turns, Turn(self.character.name, text)])

    def next_sample(self) -> InstructionSample:
        """The instruction sample whose target is the model's next turn, built by the data construction's code."""
        if self.turns and self.turns[-1].speaker == self.character.name:
            raise ConversationError("it is your turn: the character has just spoken")
        turns = (*self.turns, Turn(self.character.name, ""))  # the target turn; its text is what the model says
        stem = self.character.name.replace(" ", "_")
        dialogue = Dialogue(
            id=f"{stem}_{_ID_MARKERS[self.mode]}_app", type=self.mode, split=self.character.split, path="(the page)",
            image=self.image.image, owner=self.character, source="app", turns=turns, partner=self.partner)
        annotations = Annotations({self.image.image: self.image.annotation} if self.image.annotation else {})
        return dialogue_sample(dialogue, len(turns) - 1, annotations, self.profiles)

    def next_request(self) -> Tuple[ChatRequest, InstructionSample]:
        """The request inference would send for the next turn, and its sample."""
        sample = self.next_sample()
        test_sample = parse_sample(sample.test_record(), need_ground_truth=False)
        return answer_request(test_sample, self.image.image_dir), sample


def shown_prompt(request: ChatRequest) -> str:
    """The request as the model reads it: the system prompt, then the user turn in Qwen-VL's list format (the image
    span holds the image's path here; the model sees the image's features in its place)."""
    return f"[system]\n{request.system}\n\n[user]\n{from_list_format(list(request.query))}"
