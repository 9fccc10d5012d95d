"""Replies stream in from the serve engine (equal to one-at-a-time greedy chat(), several users in one batch) or from
an OpenAI-compatible endpoint; an endpoint that is down or refuses the key is one message for the page, without
the key."""

import threading

import pytest
from PIL import Image

from mmrole.app.replies import EndpointReplies, LocalReplies, ReplyError
from mmrole.backends.base import ChatRequest, GenerationParams
from mmrole.backends.client import ChatClient
from mmrole.common.list_format import from_list_format
from mmrole.common.prompts import ROLEPLAY_SYSTEM
from tests.support.serve import API_KEY, MODEL_NAME

TOKENS = 24


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, color in enumerate([(200, 40, 40), (30, 160, 60)]):
        path = folder / f"picture{i}.png"
        Image.new("RGB", (48, 32), color).save(path)
        paths.append(str(path))
    return paths


def request(text, image):
    return ChatRequest.single(text, image=image, system=ROLEPLAY_SYSTEM)


def expected(tiny, req):
    from mmrole.qwen_vl.generation.chat import chat

    _, model, tokenizer = tiny
    response, _ = chat(model, tokenizer, from_list_format(list(req.query)), history=[], system=req.system,
                       do_sample=False, max_new_tokens=TOKENS)
    return response


@pytest.fixture(scope="module")
def local(backend):
    replies = LocalReplies(backend, batch_size=4)
    yield replies
    replies.close()


def test_a_local_reply_streams_and_equals_chat(local, tiny, images):
    req = request("Please respond to the following words: what is in the picture?", images[0])
    steps = list(local.stream(req, GenerationParams(greedy=True, max_new_tokens=TOKENS)))
    assert len(steps) >= 3 and all(later.startswith(earlier) for earlier, later in zip(steps, steps[1:]))
    assert steps[-1] == expected(tiny, req)


def test_several_users_decode_in_one_batch(local, tiny, images):
    requests = [request(f"User {i} asks about the colour of this thing.", images[i % 2]) for i in range(3)]
    answers = [None] * len(requests)

    def talk(i):
        answers[i] = list(local.stream(requests[i], GenerationParams(greedy=True, max_new_tokens=TOKENS)))[-1]

    largest = local.engine.stats["largest_batch"]
    threads = [threading.Thread(target=talk, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert answers == [expected(tiny, r) for r in requests]
    assert largest < 2 <= local.engine.stats["largest_batch"]  # the users shared decoding steps


def test_a_conversation_too_long_for_the_model_is_named(backend, images):
    replies = LocalReplies(backend, batch_size=1, max_context_tokens=300)
    try:
        with pytest.raises(ReplyError, match=r"too long for the model: the prompt has \d+ tokens.*exceeds the model's "
                                             r"300; start a new conversation"):
            list(replies.stream(request("word " * 400, images[0]), GenerationParams(greedy=True, max_new_tokens=8)))
    finally:
        replies.close()


def test_an_endpoint_reply_streams_and_equals_chat(server, tiny, images):
    replies = EndpointReplies(ChatClient(MODEL_NAME, base_url=server.base_url, api_key_env="MMROLE_TEST_UNSET_KEY"))
    req = request("Describe the picture in your own voice.", images[1])
    steps = list(replies.stream(req, GenerationParams(greedy=True, max_new_tokens=TOKENS)))
    assert len(steps) >= 2 and steps[-1] == expected(tiny, req)


def test_an_endpoint_that_is_down_is_one_message(images):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    replies = EndpointReplies(ChatClient(MODEL_NAME, base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2,
                                         backoff_initial=0.01, api_key_env="MMROLE_TEST_UNSET_KEY"))
    with pytest.raises(ReplyError, match=rf"model {MODEL_NAME} at http://127.0.0.1:{port}/v1 did not answer: "
                                         r"APIConnectionError: Connection error. \(after 2 attempts\)"):
        list(replies.stream(request("hello", images[0]), GenerationParams(greedy=True, max_new_tokens=4)))


def test_a_refused_key_is_named_and_never_shown(backend, images, monkeypatch):
    from mmrole.serve.api import ServeConfig
    from mmrole.serve.server import start_server

    wrong = "sk-app-wrong-key-0123456789abcdef"
    monkeypatch.setenv("MMROLE_TEST_APP_KEY", wrong)
    with start_server(backend, ServeConfig(model_name=MODEL_NAME, api_key=API_KEY), port=0) as running:
        replies = EndpointReplies(ChatClient(MODEL_NAME, base_url=running.base_url, api_key_env="MMROLE_TEST_APP_KEY"))
        with pytest.raises(ReplyError) as refused:
            list(replies.stream(request("hello", images[0]), GenerationParams(greedy=True, max_new_tokens=4)))
    message = str(refused.value)
    assert "the API key was refused" in message and "MMROLE_TEST_APP_KEY" in message
    assert wrong not in message and "0123456789abcdef" not in message
