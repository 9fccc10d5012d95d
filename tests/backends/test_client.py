"""mmrole.backends.client against the local stub server: retries, failures, concurrency, accounting, secrets."""

import base64
import json
import logging
import threading
import time

import pytest

from mmrole.backends.client import (ChatCall, ChatClient, EndpointRejected, MalformedResponse, Prices, RequestFailed,
                                    image_data_url, redact, system_message, user_message)
from tests.support.openai_stub import Fault, OpenAIStub, StubReply

KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture
def stub():
    with OpenAIStub(timeout_delay=1.0) as server:
        yield server


def make_client(stub, **options):
    options = {"api_key": KEY, "timeout": 0.4, "backoff_initial": 0.001, "max_attempts": 3, **options}
    return ChatClient("stub-gpt", base_url=stub.base_url, **options)


@pytest.mark.parametrize("fault", Fault.TRANSIENT)
def test_transient_fault_is_retried_then_succeeds(stub, fault):
    client = make_client(stub)
    stub.fail_next(fault)
    done = client.chat([user_message("hello")])
    assert done.text == "echo: hello"
    assert done.attempts == 2
    assert [r.fault for r in stub.completion_requests] == [fault, None]
    assert client.usage.retries == 1 and client.usage.failed == 0


def test_attempts_are_bounded_and_failure_is_reported(stub):
    client = make_client(stub, max_attempts=3)
    stub.fail_next(Fault.SERVER_ERROR, Fault.MALFORMED_JSON, Fault.RATE_LIMIT, Fault.SERVER_ERROR)
    with pytest.raises(RequestFailed) as failure:
        client.chat([user_message("hello")], key="item-7")
    assert failure.value.key == "item-7"
    assert failure.value.attempts == 3 and failure.value.retryable
    assert "429" in failure.value.message  # the last error is named
    assert len(stub.completion_requests) == 3  # the fourth fault was never reached
    assert client.usage.failed == 1 and client.usage.succeeded == 0


def test_permanent_error_is_not_retried_and_key_never_leaks(stub, caplog):
    client = make_client(stub)
    stub.fail_next(Fault.BAD_REQUEST)  # this request only: the client goes on
    with caplog.at_level(logging.DEBUG, logger="mmrole.backends.client"), pytest.raises(RequestFailed) as failure:
        client.chat([user_message("hello")])
    assert len(stub.completion_requests) == 1
    assert "400" in str(failure.value) and not failure.value.retryable
    assert client.chat([user_message("again")]).text == "echo: again"
    stub.fail_next(Fault.UNAUTHORIZED)  # the key: nothing else can succeed
    with caplog.at_level(logging.DEBUG, logger="mmrole.backends.client"), pytest.raises(EndpointRejected) as rejected:
        client.chat([user_message("hello")])
    assert len(stub.completion_requests) == 3
    assert stub.completion_requests[2].authorization == f"Bearer {KEY}"  # the key was sent ...
    assert "401" in str(rejected.value) and "check the key in $OPENAI_API_KEY" in str(rejected.value)
    for text in (str(failure.value), failure.value.message, str(rejected.value), caplog.text, repr(client)):
        assert KEY not in text and "0123456789abcdef" not in text  # ... and reported nowhere
    with pytest.raises(EndpointRejected):  # and no later call is sent at all
        client.chat([user_message("once more")])
    assert len(stub.completion_requests) == 3


@pytest.mark.parametrize("fault, status, hint", [(Fault.UNAUTHORIZED, "401", "check the key"),
                                                 (Fault.FORBIDDEN, "403", "check the key"),
                                                 (Fault.UNKNOWN_MODEL, "404", "check --model 'stub-gpt'")])
def test_a_refused_key_or_unknown_model_stops_chat_many_at_once(stub, caplog, fault, status, hint):
    """Each of 40 calls would meet the same refusal: the first stops the client; at most the calls already
    in flight reach the server, none is retried, and the refusal is raised once, not per call."""
    stub.fail_when(lambda r: True, fault, times=1000)
    client = make_client(stub, concurrency=4)
    calls = [ChatCall(messages=[user_message(f"q{i}")], key=i) for i in range(40)]
    with caplog.at_level(logging.DEBUG, logger="mmrole.backends.client"), pytest.raises(EndpointRejected) as rejected:
        list(client.chat_many(calls))
    assert 1 <= len(stub.completion_requests) <= 4
    assert status in str(rejected.value) and hint in str(rejected.value)
    assert "retrying" not in caplog.text and " failed: " not in caplog.text  # no message per call


def test_validate_rejects_are_retried_then_reported(stub):
    replies = iter(["not json", '{"ok": true}'])
    stub.responder = lambda request: next(replies)

    def parse(completion):
        try:
            return json.loads(completion.text)
        except json.JSONDecodeError as e:
            raise MalformedResponse(f"not JSON: {e}")

    client = make_client(stub)
    assert client.chat([user_message("x")], validate=parse).value == {"ok": True}

    stub.responder = lambda request: "still not json"
    with pytest.raises(RequestFailed) as failure:
        client.chat([user_message("x")], validate=parse)
    assert "unusable reply" in failure.value.message and failure.value.attempts == 3


def test_bug_in_validate_is_a_failure_not_a_crash(stub):
    client = make_client(stub)
    outcomes = list(client.chat_many([ChatCall([user_message("a")], key=1, validate=lambda c: 1 / 0),
                                      ChatCall([user_message("b")], key=2)]))
    by_key = {o.key: o for o in outcomes}
    assert isinstance(by_key[1], RequestFailed) and "ZeroDivisionError" in by_key[1].message
    assert by_key[2].text == "echo: b"
    assert len(stub.completion_requests) == 2  # the bug was not retried


def test_request_carries_model_system_and_image(stub, mmrole_data):
    image = next((mmrole_data / "images" / "Friends").glob("*.jpg"))
    client = make_client(stub)
    client.chat([system_message("You are Rachel."), user_message("What is this?", images=[image])],
                max_tokens=64, temperature=0.5)
    request = stub.completion_requests[0]
    assert request.model == "stub-gpt"
    assert request.system_prompt == "You are Rachel."
    assert request.user_text == "What is this?"
    assert request.has_image_data_url
    assert request.body["max_tokens"] == 64 and request.body["temperature"] == 0.5
    url = request.image_urls[0]
    assert base64.b64decode(url.split(",", 1)[1]) == image.read_bytes()


def test_image_data_url_sniffs_the_real_type(tmp_path):
    from PIL import Image

    png_named_jpg = tmp_path / "photo.jpg"
    Image.new("RGB", (4, 4), "red").save(png_named_jpg, format="PNG")
    assert image_data_url(png_named_jpg).startswith("data:image/png;base64,")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        image_data_url(text)


def test_chat_many_bounds_concurrency_and_yields_as_completed(stub):
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow(request):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.8 if request.user_text == "0" else 0.05)  # the first call finishes last
        with lock:
            in_flight[0] -= 1
        return StubReply(f"answer {request.user_text}", prompt_tokens=1000, completion_tokens=500)

    stub.responder = slow
    client = make_client(stub, concurrency=3, prices=Prices(input=1.0, output=2.0), timeout=5)
    calls = (ChatCall([user_message(str(i))], key=i) for i in range(8))
    outcomes = list(client.chat_many(calls))
    assert sorted(o.key for o in outcomes) == list(range(8))
    assert all(o.text == f"answer {o.key}" for o in outcomes)
    assert outcomes[-1].key == 0  # results come as they finish, not in submission order
    assert peak[0] == 3
    usage = client.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (8000, 4000)
    assert usage.cost_usd == pytest.approx(8 * (1000 * 1.0 + 500 * 2.0) / 1e6)
    assert outcomes[0].cost_usd == pytest.approx(0.002)


def test_backoff_is_exponential_with_jitter_and_capped(stub):
    delays = []
    client = make_client(stub, max_attempts=6, backoff_initial=1.0, backoff_max=5.0, sleep=delays.append)
    stub.fail_next(*[Fault.SERVER_ERROR] * 5)
    client.chat([user_message("x")])
    assert len(delays) == 5
    for attempt, delay in enumerate(delays, 1):
        ceiling = min(5.0, 2 ** (attempt - 1))
        assert ceiling * 0.5 <= delay <= ceiling
    assert len(set(delays)) > 1


def test_stopping_chat_many_early_cancels_the_rest(stub):
    client = make_client(stub, concurrency=2)
    outcomes = client.chat_many(ChatCall([user_message(str(i))], key=i) for i in range(50))
    first = next(outcomes)
    outcomes.close()
    assert first.text.startswith("echo: ")
    assert len(stub.completion_requests) <= 4 + 2  # what was queued or in flight, never all 50


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        ChatClient("gpt-4o")


def test_environment_configures_endpoint_and_key(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    ChatClient("env-model", timeout=2).chat([user_message("hi")])
    assert stub.completion_requests[0].authorization == f"Bearer {KEY}"
    assert stub.completion_requests[0].model == "env-model"


def test_redact_hides_key_shapes():
    assert redact(f"bad key {KEY} here", [KEY]) == "bad key *** here"
    assert "0123456789" not in redact("key sk-proj-0123456789abcdef")


def test_stub_streams_valid_server_sent_events(stub):
    import openai

    sdk = openai.OpenAI(api_key=KEY, base_url=stub.base_url, max_retries=0)
    stub.responder = lambda request: "a streamed answer that is longer than one chunk"
    chunks = list(sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a streamed answer that is longer than one chunk"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens > 0


def test_messages_built_when_sent(stub):
    built = []

    def messages_of(i):
        def build():
            built.append((i, threading.current_thread().name))
            return [user_message(str(i))]
        return build

    client = make_client(stub, concurrency=2)
    outcomes = client.chat_many(ChatCall(messages_of(i), key=i) for i in range(50))
    first = next(outcomes)
    outcomes.close()
    assert first.text == f"echo: {first.key}"
    assert len(built) == len(stub.completion_requests) <= 4 + 2  # only the calls actually sent were built
    assert all(thread.startswith("chat") for _, thread in built)  # by the worker sending them

    def unreadable():
        raise FileNotFoundError("no such image: photos/a.jpg")

    before = len(stub.completion_requests)
    failed = list(client.chat_many([ChatCall(unreadable, key="a")]))[0]
    assert isinstance(failed, RequestFailed) and failed.key == "a" and not failed.retryable
    assert "photos/a.jpg" in failed.message and failed.attempts == 0
    assert len(stub.completion_requests) == before  # nothing sent


def test_a_missing_key_for_a_custom_endpoint_is_said_not_silent(stub, caplog, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with caplog.at_level(logging.WARNING, logger="mmrole.backends.client"):
        client = ChatClient("stub-gpt", base_url=stub.base_url, api_key_env="NO_SUCH_KEY_VAR")
    assert "no API key in $NO_SUCH_KEY_VAR" in caplog.text and stub.base_url in caplog.text
    assert client.chat([user_message("hi")]).text == "echo: hi"  # a server that needs none still answers
