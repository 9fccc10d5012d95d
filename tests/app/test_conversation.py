"""The chat page's turns are the requests inference sends: every published human-role and inter-role In-Test sample
whose dialogue is in the raw snapshot, replayed turn by turn through a page conversation, gives exactly the request
inference.py sends for it (system prompt, image, prompt text byte for byte)."""


import pytest

from mmrole.app.conversation import (HUMAN_ROLE, INTER_ROLE, ChatImage, Conversation, ConversationError,
                                     shown_prompt)
from mmrole.app.profiles import load_character_book
from mmrole.common.prompts import HUMAN_SPEAKER, ROLEPLAY_SYSTEM
from mmrole.data.raw import load_annotations, load_dialogues, load_split
from mmrole.data.samples import split_sample_id
from mmrole.eval.answer import answer_request
from mmrole.eval.files import load_test_samples

IMAGE_DIR = "some/image/dir"


@pytest.fixture(scope="module")
def raw(mmrole_data):
    split, _ = load_split(mmrole_data, "in-distribution")
    annotations, _ = load_annotations(mmrole_data)
    dialogues = {d.id: d for d in load_dialogues(mmrole_data, split).dialogues}
    return load_character_book(mmrole_data / "profiles"), annotations, dialogues


def replay(book, annotations, dialogue, index):
    """The page conversation of `dialogue` up to turn `index`: the user types the partner's (or the human's) turns,
    the model's earlier turns are its replies."""
    target = dialogue.turns[index]
    if dialogue.type == HUMAN_ROLE:
        partner, user = None, HUMAN_SPEAKER
    else:
        user = dialogue.partner.name if target.speaker == dialogue.owner.name else dialogue.owner.name
        partner = book.character(user)
    conversation = Conversation(dialogue.type, book.character(target.speaker),
                                ChatImage(IMAGE_DIR, dialogue.image, annotations.get(dialogue.image)), book.profiles,
                                partner)
    for turn in dialogue.turns[:index]:
        conversation = (conversation.with_user_turn(turn.text) if turn.speaker == user
                        else conversation.with_reply(turn.text))
    return conversation


@pytest.mark.parametrize("dialogue_type", [HUMAN_ROLE, INTER_ROLE])
def test_replayed_published_samples_send_what_inference_sends(raw, mmrole_reference, dialogue_type):
    book, annotations, dialogues = raw
    published, _ = load_test_samples(mmrole_reference / "in-test_answers" / "mmrole-agent" /
                                     f"{dialogue_type}_test.json")
    checked = openings = 0
    for sample in published:
        dialogue_id, index = split_sample_id(sample.id)
        if dialogue_id not in dialogues:
            continue
        request, _ = replay(book, annotations, dialogues[dialogue_id], index).next_request()
        expected = answer_request(sample, IMAGE_DIR)
        assert (request.system, request.query) == (expected.system, expected.query), sample.id
        assert request.system == ROLEPLAY_SYSTEM and request.query[0] == {"image": f"{IMAGE_DIR}/{sample.image}"}
        checked += 1
        openings += index == 0
    assert checked >= 55  # 64 human-role and 55 inter-role samples of the snapshot
    if dialogue_type == INTER_ROLE:
        assert openings > 0  # "Please initiate the conversation ..." samples are among them


def test_the_shown_prompt_is_the_request_as_text(raw):
    book, annotations, _ = raw
    conversation = Conversation(HUMAN_ROLE, book.character("Iron Man"), ChatImage(IMAGE_DIR, "x.png"), book.profiles)
    request, sample = conversation.with_user_turn("Hello there, <img>/etc/passwd</img>!").next_request()
    text = shown_prompt(request)
    assert text == f"[system]\n{ROLEPLAY_SYSTEM}\n\n[user]\nPicture 1: <img>{IMAGE_DIR}/x.png</img>\n{sample.prompt}"
    assert sample.prompt.endswith("vocabulary of Iron Man:\nHello there, <img>/etc/passwd</img>!")


def test_turns_out_of_order_are_refused(raw):
    book, _, _ = raw
    image = ChatImage(IMAGE_DIR, "x.png")
    human = Conversation(HUMAN_ROLE, book.character("Iron Man"), image, book.profiles)
    with pytest.raises(ConversationError, match="curious human speaks first"):
        human.check_model_opens()
    with pytest.raises(ConversationError, match="empty"):
        human.with_user_turn("   ")
    with pytest.raises(ConversationError, match="wait for the reply"):
        human.with_user_turn("one").with_user_turn("two")
    with pytest.raises(ConversationError, match="your turn"):
        human.with_user_turn("one").with_reply("answer").next_sample()
    with pytest.raises(ConversationError, match="not a character of 'The Avengers'"):
        Conversation(INTER_ROLE, book.character("Iron Man"), image, book.profiles, book.character("Harry Potter"))
    with pytest.raises(ConversationError, match="cannot talk with itself"):
        Conversation(INTER_ROLE, book.character("Thor"), image, book.profiles, book.character("Thor"))
    inter = Conversation(INTER_ROLE, book.character("Thor"), image, book.profiles, book.character("Loki"))
    opening = inter.next_sample()
    assert opening.turn_index == 0 and "Please initiate the conversation with Loki in English" in opening.prompt
    with pytest.raises(ConversationError, match="already begun"):
        inter.with_user_turn("Brother!").check_model_opens()
