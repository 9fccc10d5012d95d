"""The openai backend against the local stub server: messages, parameters, errors per request."""

import base64

import pytest
from PIL import Image

from mmrole.backends import make_backend
from mmrole.backends.base import BackendError, ChatRequest, ChatResult, GenerationParams
from mmrole.backends.openai import chat_messages, completion_params
from tests.support.openai_stub import Fault, OpenAIStub, StubReply


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (8, 6), (200, 10, 10)).save(path)
    return path


def test_request_becomes_system_and_user_message_image_first(image):
    request = ChatRequest.single("Who is this?", image=str(image), system="Be brief.")
    system, user = chat_messages(request)
    assert system == {"role": "system", "content": "Be brief."}
    assert user["role"] == "user"
    image_part, text_part = user["content"]
    assert text_part == {"type": "text", "text": "Who is this?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == image.read_bytes()
    text_only = chat_messages(ChatRequest.single("hi", system="s"))
    assert text_only[1] == {"role": "user", "content": "hi"}


def test_journal_digest_names_images_by_what_is_sent(image, tmp_path, monkeypatch):
    """An API judge sees bytes: another spelling of the same folder is the same request; new bytes at the
    same path are a new request. A local Qwen-VL sees the path (it is in the prompt)."""
    from mmrole.backends.base import Backend
    from mmrole.backends.openai import OpenAIBackend

    monkeypatch.chdir(tmp_path)
    backend = OpenAIBackend("judge", api_key="unused", base_url="http://127.0.0.1:9/v1")
    absolute = ChatRequest.single("Score it.", image=str(image), system="s")
    relative = ChatRequest.single("Score it.", image=image.name, system="s")
    assert backend.request_digest(absolute) == backend.request_digest(relative)
    assert Backend.request_digest(backend, absolute) != Backend.request_digest(backend, relative)  # by path
    assert backend.request_digest(absolute) != backend.request_digest(ChatRequest.single("Other.", image=str(image),
                                                                                         system="s"))
    moved = tmp_path / "blue.png"
    Image.new("RGB", (8, 6), (10, 10, 200)).save(moved)
    assert backend.request_digest(ChatRequest.single("Score it.", image=str(moved), system="s")) != \
        backend.request_digest(absolute)
    before = backend.request_digest(absolute)
    backend.close()
    Image.new("RGB", (8, 6), (10, 200, 10)).save(image)  # new bytes at the same path, seen by the next run
    rerun = OpenAIBackend("judge", api_key="unused", base_url="http://127.0.0.1:9/v1")
    assert rerun.request_digest(absolute) != before
    rerun.close()


def test_whether_the_seed_is_sent_is_part_of_the_run_settings():
    """Without --seed nothing is sent; with --seed 1234 (the default value) the seed is sent: other requests,
    so a journal of one run is not taken for the other's."""
    from mmrole.backends.openai import OpenAIBackend
    from mmrole.eval.run import run_settings

    params = GenerationParams(temperature=0.7, seed=1234)
    settings = []
    for send_seed in (False, True):
        backend = OpenAIBackend("judge", api_key="unused", base_url="http://127.0.0.1:9/v1", send_seed=send_seed)
        settings.append(run_settings(backend, params))
        backend.close()
    assert settings[0] != settings[1]


def test_generation_params_map_to_request_fields():
    assert completion_params(GenerationParams(greedy=True, max_new_tokens=64, top_p=0.3, seed=7)) == {
        "temperature": 0.0, "max_tokens": 64}  # no seed unless asked: some endpoints reject the field
    assert completion_params(GenerationParams(greedy=True, seed=7), send_seed=True) == {"temperature": 0.0, "seed": 7}
    assert completion_params(GenerationParams(temperature=0.7, top_p=0.9, stop=("<e>",))) == {
        "temperature": 0.7, "top_p": 0.9, "stop": ["<e>"]}
    assert completion_params(GenerationParams()) == {}


def test_results_errors_and_usage_through_the_stub(image, tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-abcdefghijklmnop")

    def responder(request):
        if "long" in request.user_text:
            return StubReply("cut", finish_reason="length", prompt_tokens=10, completion_tokens=3)
        return f"seen: {request.user_text}"

    with OpenAIStub(responder) as stub:
        backend = make_backend("openai", model="judge", base_url=stub.base_url, api_key_env="STUB_KEY",
                               concurrency=2, max_attempts=2, backoff_initial=0.01)
        requests = [ChatRequest.single(f"q{i}", image=str(image), system="s", key=("id", i)) for i in range(3)]
        requests.append(ChatRequest.single("long one", system="s", key=("id", 3)))
        requests.append(ChatRequest.single("no image", image=str(tmp_path / "missing.png"), system="s", key=("id", 4)))
        stub.fail_when(lambda r: r.user_text == "q1", Fault.SERVER_ERROR, times=2)  # both attempts fail
        stub.fail_when(lambda r: r.user_text == "q2", Fault.MALFORMED_JSON, times=1)  # retried, then fine
        results = backend.generate(requests, GenerationParams(greedy=True, max_new_tokens=5))
        backend.close()
    assert isinstance(results[0], ChatResult) and results[0].text == "seen: q0"
    assert isinstance(results[1], BackendError) and results[1].key == ("id", 1) and "500" in str(results[1])
    assert results[2].text == "seen: q2"
    assert results[3].finish_reason == "length" and results[3].completion_tokens == 3
    assert isinstance(results[4], BackendError) and "missing.png" in str(results[4])
    sent = [r for r in stub.completion_requests if r.user_text == "q0"][0]
    assert sent.body["temperature"] == 0.0 and sent.body["max_tokens"] == 5 and sent.model == "judge"
    assert sent.has_image_data_url and sent.authorization == "Bearer sk-abcdefghijklmnop"
    assert "abcdefghijklmnop" not in str(results[1])
    assert backend.usage_summary().startswith("4 calls")  # the request without its image never left


def test_make_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown backend 'vllm'"):
        make_backend("vllm")
