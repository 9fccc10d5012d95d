"""The chat page: talk with a character about an image, the reply streaming in.

The user picks a character of the profiles folder (its name, script and brief introduction are shown) or writes a
profile, picks an image of the data or uploads one, and chooses a mode: human-role (the user is a curious human and
speaks first) or inter-role (the user plays a second character of the same script; either may open). Every turn is
sent as inference sends a test sample (mmrole.app.conversation), and "The exact prompt" shows that request. Changing
the character, the partner, the mode or the image starts a new conversation. Problems (an unknown or malformed
profile, a bad upload, a backend that is down) are shown in the page's status line; the page and the other users'
sessions go on.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from ..backends.base import GenerationParams
from ..common.prompts import HUMAN_SPEAKER
from ..data.raw import Character, Turn
from .conversation import HUMAN_ROLE, INTER_ROLE, ChatImage, Conversation, ConversationError, shown_prompt
from .profiles import CharacterBook, ProfileError, brief_introduction, written_character
from .replies import ReplyError
from .uploads import UploadError, check_upload

FROM_FOLDER, WRITTEN = "from the profiles folder", "written here"
MODE_LABELS = [("human-role: you are a curious human", HUMAN_ROLE),
               ("inter-role: you play another character of the script", INTER_ROLE)]


@dataclass
class ChatState:
    """One browser session's conversation: the turns so far and the image they are about."""

    turns: List[Turn] = field(default_factory=list)
    image: Optional[ChatImage] = None


@dataclass
class Setup:
    """What the page's controls say (the inputs of every turn)."""

    mode: str
    source: str
    character: Optional[str]
    written_name: str
    written_script: str
    written_profile: str
    partner: Optional[str]


def status_html(message: str = "", kind: str = "error") -> str:
    """The status line: escaped text (messages quote file names and user input)."""
    if not message:
        return "<div id='chat-status-text'></div>"
    mark = "⚠ " if kind == "error" else ""
    return f"<div id='chat-status-text' class='status-{kind}'>{mark}{html.escape(message)}</div>"


class ChatPage:
    """The chat page's logic (the Gradio wiring is in `build`). replies: LocalReplies or EndpointReplies, or None
    when the app was started without a model (the page then says so)."""

    def __init__(self, book: Optional[CharacterBook], replies, *, max_image_bytes: int, max_image_pixels: int,
                 greedy: bool = True, max_new_tokens: int = 256):
        self.book = book or CharacterBook(None)
        self.replies = replies
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.greedy = greedy
        self.max_new_tokens = max_new_tokens

    # --- characters -----------------------------------------------------------------------------

    def character_choices(self) -> List[Tuple[str, str]]:
        return [(f"{c.name} — {c.script}", c.name) for c in self.book.characters.values()]

    def resolve(self, setup: Setup) -> Tuple[Character, Optional[Character], dict]:
        """(the model's character, the user's character or None, the profiles the prompt may quote);
        ProfileError or ConversationError naming what is wrong."""
        profiles = dict(self.book.profiles)
        if setup.source == WRITTEN:
            character = written_character(setup.written_name, setup.written_script, setup.written_profile)
            profiles[character.name] = character.profile
        elif not setup.character:
            raise ProfileError("choose a character (or write a profile)")
        else:
            character = self.book.character(setup.character)
        if setup.mode != INTER_ROLE:
            return character, None, profiles
        if not setup.partner:
            raise ConversationError(f"choose the character you play: another character of {character.script!r}")
        partner = self.book.character(setup.partner)
        return character, partner, profiles

    def card(self, setup: Setup) -> str:
        """The chosen character's name, script and brief introduction (or why it cannot be played)."""
        try:
            character, partner, _ = self.resolve(setup)
        except (ProfileError, ConversationError) as e:
            return f"<div id='character-card-text' class='status-error'>⚠ {html.escape(str(e))}</div>"
        lines = [f"<div id='character-card-text'><b>{html.escape(character.name)}</b> "
                 f"<i>from {html.escape(character.script)}</i><p>{html.escape(brief_introduction(character.profile))}"
                 "</p>"]
        if partner is not None:
            lines.append(f"<p>You play <b>{html.escape(partner.name)}</b>.</p>")
        return "".join(lines) + "</div>"

    def partner_choices(self, setup: Setup) -> List[str]:
        """Whom the user may play in inter-role: the other characters of the chosen character's script."""
        try:
            character, _, _ = self.resolve(Setup(**{**setup.__dict__, "mode": HUMAN_ROLE}))
        except (ProfileError, ConversationError):
            return []
        return self.book.partners_of(character)

    # --- images ---------------------------------------------------------------------------------

    def picked_image(self, image: str) -> ChatImage:
        if image not in self.book.pickable_images():
            raise UploadError(f"{image!r} is not an image of the data folder")
        return ChatImage(str(self.book.images_dir), image, self.book.annotations.get(image))

    def uploaded_image(self, path: str) -> ChatImage:
        check_upload(path, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)
        return ChatImage(os.path.dirname(path), os.path.basename(path))

    # --- turns ----------------------------------------------------------------------------------

    def conversation(self, state: ChatState, setup: Setup) -> Conversation:
        if state.image is None:
            raise UploadError("choose an image of the data or upload one first")
        character, partner, profiles = self.resolve(setup)
        return Conversation(setup.mode, character, state.image, profiles, partner, list(state.turns))

    def turn(self, state: ChatState, setup: Setup, message: Optional[str], greedy: bool,
             max_new_tokens: int) -> Iterator[Tuple[List[dict], str, str, str]]:
        """One exchange: yields (chat messages, status html, exact prompt, message box) as the reply grows; state.turns
        gains the user's words and the reply once the reply is complete, and the message box is emptied; when the turn
        fails the box keeps the message, to send again. message None: the character opens (inter-role)."""
        kept = message or ""
        shown = self.messages(state, setup)
        try:
            if self.replies is None:
                raise ReplyError("no model: start the app with --model_path (a local checkpoint) or --base_url (an "
                                 "OpenAI-compatible endpoint)")
            conversation = self.conversation(state, setup)
            if message is None:
                conversation.check_model_opens()
            else:
                conversation = conversation.with_user_turn(message)
            request, _ = conversation.next_request()
        except (ProfileError, ConversationError, UploadError, ReplyError) as e:
            yield shown, status_html(str(e)), "", kept
            return
        prompt = shown_prompt(request)
        if message is not None:
            shown = shown + [{"role": "user", "content": message.strip()}]
        params = GenerationParams(greedy=bool(greedy), max_new_tokens=int(max_new_tokens))
        reply = ""
        yield shown + [{"role": "assistant", "content": "…"}], status_html(), prompt, ""
        try:
            for reply in self.replies.stream(request, params):
                yield shown + [{"role": "assistant", "content": reply}], status_html(), prompt, ""
        except ReplyError as e:
            yield shown[: len(shown) - (message is not None)], status_html(f"{e} (not added to the conversation; send "
                                                                           "it again)"), prompt, kept
            return
        state.turns = conversation.with_reply(reply).turns
        yield self.messages(state, setup), status_html(), prompt, ""

    def messages(self, state: ChatState, setup: Setup) -> List[dict]:
        """The conversation as the chat box shows it: the user's turns right, the character's left."""
        user = HUMAN_SPEAKER if setup.mode == HUMAN_ROLE else setup.partner
        return [{"role": "user" if turn.speaker == user else "assistant", "content": turn.text}
                for turn in state.turns]
