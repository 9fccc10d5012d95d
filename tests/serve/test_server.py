"""mmrole.serve against the `openai` client on a tiny Qwen-VL checkpoint.

Expected answers come from the model's own one-at-a-time `chat()` on the prompt the server should
build (the system prompt, the turns rendered with from_list_format, each image saved as a file under
some path: Qwen-VL replaces the positions inside an image span by the image's features, so the
path does not change the answer), never from the server code under test.
"""

import hashlib
import io
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from PIL import Image

from mmrole.common.list_format import from_list_format
from mmrole.serve.api import ApiError, RequestImages, ServeConfig, chat_request, generation_params
from mmrole.serve.server import start_server
from tests.support.scripts import REPO, load_script

from tests.support.serve import (API_KEY, MAX_TOKENS, MODEL_NAME, assert_clean_error, data_url, expected_chat,
                                 image_path, png_bytes, raw_request)


# --- mapping (no model) --------------------------------------------------------------------------

def test_messages_map_onto_qwen_turns():
    from mmrole.qwen_vl.image_processing_qwen import resized_rgb

    images = RequestImages(image_size=28)
    red, blue = png_bytes((255, 0, 0)), png_bytes((0, 0, 255))
    carried = {}
    request = chat_request([
        {"role": "system", "content": "You are Iron Man."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(red)}},
                                     {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A red square."},
        {"role": "developer", "content": [{"type": "text", "text": "Stay in character."}]},
        {"role": "user", "content": "And this?"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(blue)}}]},
    ], images, carried, max_images=4)
    red_name = f"{hashlib.sha256(red).hexdigest()[:32]}.png"
    blue_name = f"{hashlib.sha256(blue).hexdigest()[:32]}.png"
    assert request.system == "You are Iron Man.\nStay in character."
    assert request.history == ((({"image": red_name}, {"text": "What is this?"}), "A red square."),)
    assert request.query == ({"text": "And this?"}, {"image": blue_name})
    assert sorted(carried) == sorted([red_name, blue_name])
    assert carried[red_name].equal(resized_rgb(Image.open(io.BytesIO(red)), 28))  # the pixels the request carried
    assert chat_request([{"role": "user", "content": "hi"}], images, {}, 4).system == "You are a helpful assistant."


@pytest.mark.parametrize("messages, fragment", [
    ([{"role": "assistant", "content": "hi"}], "start and end with a user"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "start and end with a user"),
    ([{"role": "tool", "content": "x"}], "not supported"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "not supported"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
      {"role": "user", "content": "hi"}], "content must be text"),
    ([{"role": "user", "content": ""}], "empty"),
    ([], "non-empty list"),
])
def test_bad_conversations_are_refused(messages, fragment):
    with pytest.raises(ApiError) as caught:
        chat_request(messages, RequestImages(image_size=28), {}, 4)
    assert caught.value.status == 400 and fragment in caught.value.message


def test_generation_fields():
    config = ServeConfig(model_name="m", max_tokens_limit=100)
    greedy = generation_params({"temperature": 0, "top_p": 0.5, "max_tokens": 7, "stop": "END", "seed": 3}, config)
    assert (greedy.greedy, greedy.top_p, greedy.max_new_tokens, greedy.stop, greedy.seed) == (True, None, 7, ("END",), 3)
    sampled = generation_params({"temperature": 0.7, "top_p": 0.9, "max_completion_tokens": 5}, config)
    assert (sampled.greedy, sampled.temperature, sampled.top_p, sampled.max_new_tokens) == (False, 0.7, 0.9, 5)
    default = generation_params({}, config)  # the checkpoint's generation_config.json decides
    assert (default.greedy, default.temperature, default.max_new_tokens) == (False, None, None)
    for bad in ({"temperature": 3}, {"top_p": 0}, {"max_tokens": 101}, {"max_tokens": True}, {"stop": ["a"] * 5},
                {"stop": [""]}, {"seed": "x"}):
        with pytest.raises(ApiError):
            generation_params(bad, config)


# --- the server ----------------------------------------------------------------------------------

def test_text_chat_equals_model_chat(server, client, tiny):
    assert [m.id for m in client.models.list().data] == [MODEL_NAME]
    reply = client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=MAX_TOKENS, messages=[
        {"role": "system", "content": "You are Hermione Granger."}, {"role": "user", "content": "What is magic?"}])
    choice = reply.choices[0]
    assert choice.message.content == expected_chat(tiny, "What is magic?", system="You are Hermione Granger.")
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    _, _, tokenizer = tiny
    from mmrole.qwen_vl.chat_format import make_context
    assert reply.usage.prompt_tokens == len(make_context(tokenizer, "What is magic?", system="You are Hermione Granger.")[1])
    assert 1 <= reply.usage.completion_tokens <= MAX_TOKENS
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_image_and_multi_turn_equal_model_chat(server, client, tiny, image_folder):
    red, green = png_bytes((220, 20, 20)), png_bytes((20, 200, 40), size=(30, 30))
    red_path, green_path = image_path(image_folder, red), image_path(image_folder, green)
    first = [{"type": "image_url", "image_url": {"url": data_url(red)}}, {"type": "text", "text": "Describe it."}]
    reply = client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=MAX_TOKENS,
                                           messages=[{"role": "user", "content": first}])
    first_query = from_list_format([{"image": red_path}, {"text": "Describe it."}])
    assert reply.choices[0].message.content == expected_chat(tiny, first_query, images=[(red_path, red)])

    second = [{"type": "text", "text": "Compare with"}, {"type": "image_url", "image_url": {"url": data_url(green)}}]
    follow_up = client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=MAX_TOKENS, messages=[
        {"role": "system", "content": "You are Woody."}, {"role": "user", "content": first},
        {"role": "assistant", "content": "A red thing."}, {"role": "user", "content": second}])
    query = from_list_format([{"text": "Compare with"}, {"image": green_path}])
    assert follow_up.choices[0].message.content == expected_chat(
        tiny, query, history=[(first_query, "A red thing.")], system="You are Woody.",
        images=[(red_path, red), (green_path, green)])


def test_streaming_and_stop_strings_match_non_streaming(server, client):
    messages = [{"role": "user", "content": "Tell me a story about a dragon."}]
    plain = client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=12, messages=messages)
    text = plain.choices[0].message.content
    chunks = list(client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=12, messages=messages,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1, "streamed in pieces"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    words = text.split()
    assert len(words) >= 3, text
    stop = words[2][:3]  # a stop string that starts inside the answer
    cut = text[: text.find(stop)].strip()
    stopped = client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=12, messages=messages,
                                             stop=[stop, "\u2603never"])
    assert stopped.choices[0].message.content == cut and stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=12, messages=messages,
                                              stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == cut


def test_bad_requests_get_clean_4xx(server, client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found"
    not_an_image = data_url(b"GIF89a but not really an image at all", "image/gif")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": not_an_image}}, {"type": "text", "text": "?"}]}])
    assert caught.value.body["code"] == "invalid_image"
    for url in ("https://example.com/cat.png", "/etc/hosts", "file:///etc/hosts", "data:image/png;base64,%%%"):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], n=2)

    json_headers = {"Content-Type": "application/json"}
    status, _, data = raw_request(server, "POST", "/v1/chat/completions", b'{"model": "tiny-agent", "messages": [',
                                  json_headers)
    assert status == 400 and json.loads(data)["error"]["code"] == "invalid_json"
    assert_clean_error(data, status)
    big = json.dumps({"model": MODEL_NAME, "messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
    status, headers, data = raw_request(server, "POST", "/v1/chat/completions", big, json_headers)
    assert status == 413
    assert_clean_error(data, status)
    for method, path, expected in (("GET", "/v1/nothing", 404), ("DELETE", "/v1/models", 405),
                                   ("POST", "/v1/completions", 404)):
        status, _, data = raw_request(server, method, path, b"{}" if method == "POST" else b"", json_headers)
        assert status == expected
        assert_clean_error(data, status)
    status, _, data = raw_request(server, "POST", "/v1/chat/completions", b"[1, 2]", json_headers)
    assert status == 400
    assert_clean_error(data, status)
    # After all that the server still answers.
    ok = client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=2,
                                        messages=[{"role": "user", "content": "still there?"}])
    assert ok.choices[0].message.content is not None


def test_api_key_local_media_and_log_hygiene(backend, tmp_path, caplog):
    media = tmp_path / "media"
    media.mkdir()
    inside = media / "blue.png"
    inside.write_bytes(png_bytes((0, 0, 255)))
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes((1, 2, 3)))
    config = ServeConfig(model_name=MODEL_NAME, api_key=API_KEY, allowed_local_media_path=media)
    caplog.set_level(logging.DEBUG, logger="mmrole.serve")
    with start_server(backend, config, port=0) as server:
        wrong = openai.OpenAI(base_url=server.base_url, api_key="sk-wrong-key-123456", max_retries=0)
        right = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        hello = [{"role": "user", "content": "hello"}]
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.chat.completions.create(model=MODEL_NAME, messages=hello)
        assert caught.value.body["code"] == "invalid_api_key" and API_KEY not in json.dumps(caught.value.body)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        body = json.dumps({"model": MODEL_NAME, "messages": hello}).encode()
        for path, method, data in (("/v1/chat/completions", "POST", body), ("/v1/models", "GET", b"")):
            status, _, answer = raw_request(server, method, path, data, {"Content-Type": "application/json"})
            assert status == 401 and json.loads(answer)["error"]["message"].startswith("missing API key")
        assert raw_request(server, "GET", "/health")[0] == 200
        assert right.chat.completions.create(model=MODEL_NAME, messages=hello, max_tokens=2).choices
        image_message = lambda url: [{"role": "user", "content": [  # noqa: E731
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "colour?"}]}]
        reply = right.chat.completions.create(model=MODEL_NAME, max_tokens=2, temperature=0,
                                              messages=image_message(f"file://{inside}"))
        assert reply.usage.prompt_tokens > 258, "the image span is in the prompt"
        for escape in (str(outside), f"file://{media}/../secret.png", f"file://{media}/missing.png"):
            with pytest.raises(openai.BadRequestError) as caught:
                right.chat.completions.create(model=MODEL_NAME, messages=image_message(escape))
            assert str(tmp_path) not in json.dumps(caught.value.body)
        assert inside.exists(), "a client's local file is never deleted"
    assert "POST /v1/chat/completions" in caplog.text
    assert API_KEY not in caplog.text and "sk-wrong-key" not in caplog.text


def _long_talker(client):
    """A prompt on which the tiny model's greedy reply runs into a loop (never ends by itself)."""
    for k in range(20):
        messages = [{"role": "user", "content": f"Hello, who are you? ({k})"}]
        reply = client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=48, messages=messages)
        if reply.choices[0].finish_reason == "length":
            return messages
    pytest.fail("no prompt found on which the tiny model talks for 48 tokens")


def _start_stream(server, messages, max_tokens):
    """Send a streaming request on a raw socket and return it once the first generated text arrived. Not at the
    first chunk: the server sends the role chunk before the engine admits the job, and a client gone by then is a
    dropped job (stats["dropped_jobs"]), not a cancelled row (this test failed that way once in a full suite)."""
    host, port = server.address
    body = json.dumps({"model": MODEL_NAME, "stream": True, "temperature": 0, "max_tokens": max_tokens,
                       "messages": messages}).encode()
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    received = b""
    while received.count(b"data: ") < 2:
        received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 200")
    return sock


def _wait_for(condition, timeout=60.0, show=None):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out {show}"
        time.sleep(0.05)


def test_client_leaving_stops_its_generation_and_others_are_served(server, client, caplog):
    caplog.set_level(logging.INFO, logger="mmrole.serve")
    stats = server.app.engine.stats
    talker = _long_talker(client)
    before = dict(stats)
    sock = _start_stream(server, talker, max_tokens=2000)
    sock.close()  # mid-stream
    _wait_for(lambda: stats["cancelled_rows"] == before["cancelled_rows"] + 1)
    assert stats["cancelled_row_tokens"] - before["cancelled_row_tokens"] < 2000, "generation stopped early"

    impatient = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):  # a non-streaming client that gives up
        impatient.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=2000, messages=talker)
    _wait_for(lambda: stats["cancelled_rows"] + stats["dropped_jobs"]
              == before["cancelled_rows"] + before["dropped_jobs"] + 2, show=stats)
    reply = client.chat.completions.create(model=MODEL_NAME, temperature=0, max_tokens=3,
                                           messages=[{"role": "user", "content": "next please"}])
    assert reply.choices[0].message.content is not None
    _wait_for(lambda: caplog.text.count('" 499 ') >= 2)
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_32_concurrent_clients_get_their_serial_answers(server, tiny, image_folder):
    """Greedy answers under load (batched, mixed settings, streams, images) equal one-at-a-time answers."""
    colours = [png_bytes((40 * k % 256, 90 * k % 256, 150)) for k in range(4)]

    def request(k):
        content = f"Client {k}: say something about number {k * 7}."
        if k % 4 == 1:
            content = [{"type": "image_url", "image_url": {"url": data_url(colours[k % 3])}},
                       {"type": "text", "text": content}]
        return dict(model=MODEL_NAME, temperature=0, max_tokens=6 + k % 3, stream=k % 4 == 3,
                    messages=[{"role": "system", "content": f"You are character {k % 5}."},
                              {"role": "user", "content": content}])

    def answer(k):
        kwargs = request(k)
        local = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)
        response = local.chat.completions.create(**kwargs)
        if kwargs["stream"]:
            return "".join(c.choices[0].delta.content or "" for c in response if c.choices)
        return response.choices[0].message.content

    serial = [answer(k) for k in range(32)]
    stats = server.app.engine.stats
    largest, mixed = stats["largest_batch"], stats["mixed_budget_steps"]
    barrier = threading.Barrier(32)

    def together(k):
        barrier.wait()
        return answer(k)

    with ThreadPoolExecutor(32) as pool:
        concurrent = list(pool.map(together, range(32)))
    assert concurrent == serial
    assert stats["largest_batch"] > max(largest, 1), "concurrent requests were batched"
    assert stats["mixed_budget_steps"] > mixed, "requests with different max_tokens decoded together"
    # Spot check against the model itself: a text request and an image request.
    _, model, tokenizer = tiny
    assert serial[0] == expected_chat(tiny, "Client 0: say something about number 0.", system="You are character 0.",
                                      max_tokens=6)
    path = image_path(image_folder, colours[5 % 3])
    query = from_list_format([{"image": path}, {"text": "Client 5: say something about number 35."}])
    assert serial[5] == expected_chat(tiny, query, system="You are character 0.", images=[(path, colours[2])],
                                      max_tokens=8)


def _concurrently(functions):
    barrier = threading.Barrier(len(functions))

    def run(function):
        barrier.wait()
        return function()

    with ThreadPoolExecutor(len(functions)) as pool:
        return list(pool.map(run, functions))


def test_requests_with_different_max_tokens_share_decoding_steps(server, client):
    """Counted by the engine: decoding steps whose rows had different max_tokens, rows per step."""
    budgets = [2, 5, 9, 14, 20, 30]
    requests = [dict(model=MODEL_NAME, temperature=0, max_tokens=budget,
                     messages=[{"role": "user", "content": f"Tell a long tale number {k}."}])
                for k, budget in enumerate(budgets)]
    ask = lambda kwargs: client.chat.completions.create(**kwargs)  # noqa: E731
    serial = [ask(kwargs) for kwargs in requests]
    stats = server.app.engine.stats
    before = dict(stats)
    together = _concurrently([lambda kwargs=kwargs: ask(kwargs) for kwargs in requests])
    assert [r.choices[0].message.content for r in together] == [r.choices[0].message.content for r in serial]
    assert [r.usage.completion_tokens for r in together] == [r.usage.completion_tokens for r in serial]
    assert stats["mixed_budget_steps"] - before["mixed_budget_steps"] >= 2
    assert stats["most_budgets_in_a_step"] >= 3
    steps = stats["decode_steps"] - before["decode_steps"]
    rows = stats["decode_rows"] - before["decode_rows"]
    assert rows / steps > 1.5, (rows, steps)  # one at a time would be exactly 1 row per step
    assert steps < sum(r.usage.completion_tokens for r in serial)


def test_seeded_sampling_is_the_same_alone_or_beside_other_rows(server, client):
    def sample(seed):
        reply = client.chat.completions.create(
            model=MODEL_NAME, temperature=1.0, top_p=1.0, max_tokens=10, seed=seed,
            messages=[{"role": "user", "content": "Invent a word."}])
        return reply.choices[0].message.content

    alone = sample(1234)
    assert sample(1234) == alone
    assert len({sample(seed) for seed in (1, 2, 3, 4)}) > 1, "the seed decides the sample"
    stats = server.app.engine.stats
    before = dict(stats)
    busy = [lambda k=k: client.chat.completions.create(
        model=MODEL_NAME, temperature=0, max_tokens=30, messages=[{"role": "user", "content": f"Go on {k}."}])
        for k in range(4)]
    results = _concurrently(busy + [lambda: sample(1234)])
    assert results[-1] == alone
    rows, steps = stats["decode_rows"] - before["decode_rows"], stats["decode_steps"] - before["decode_steps"]
    assert rows / steps > 1.5, "the rows decoded together"


# --- the project's openai backends against the server -------------------------------------------

def _sample(k, image):
    return {"id": f"Woody_comment_script_{k}_1", "system": "ignored", "image": image,
            "conversations": [{"from": "user", "value": f"Please step into the shoes of Woody. Question {k}?"},
                              {"from": "assistant", "value": f"Howdy partner, reach for the sky number {k}!"}],
            "role": "Woody", "script": "Toy Story", "other_role": "a curious human"}


def test_inference_and_review_openai_backends_against_the_server(server, tiny, tmp_path, monkeypatch, image_folder):
    inference, RM_review = load_script("inference.py"), load_script("eval/RM_review.py")
    from mmrole.common.prompts import ROLEPLAY_SYSTEM
    from mmrole.eval.review import review_request
    from mmrole.eval.files import load_test_samples

    images = tmp_path / "images"
    (images / "Toy_Story").mkdir(parents=True)
    pictures = {"Toy_Story/01.png": png_bytes((200, 150, 20)), "Toy_Story/02.png": png_bytes((20, 150, 200))}
    for name, data in pictures.items():
        (images / name).write_bytes(data)
    tests = tmp_path / "test"
    tests.mkdir()
    (tests / "comment_test.json").write_text(json.dumps([_sample(0, "Toy_Story/01.png"), _sample(1, "Toy_Story/02.png")]))
    monkeypatch.setenv("SERVE_TEST_KEY", "unused")
    common = ["--backend", "openai", "--base_url", server.base_url, "--model", MODEL_NAME, "--api_key_env",
              "SERVE_TEST_KEY", "--no_random", "--max_new_tokens", str(MAX_TOKENS), "--image_dir", str(images),
              "--no_progress"]
    answers = tmp_path / "answers"
    assert inference.main(common + ["--input_dir", str(tests), "--output_dir", str(answers)]) == 0
    answered = json.loads((answers / "comment_test.json").read_text())
    for record in answered:
        path = image_path(image_folder, pictures[record["image"]])
        query = from_list_format([{"image": path}, {"text": record["conversations"][0]["value"]}])
        assert record["conversations"][1]["answer"] == expected_chat(
            tiny, query, system=ROLEPLAY_SYSTEM, images=[(path, pictures[record["image"]])])

    rows_before = server.app.engine.stats["rows"]
    reviews = tmp_path / "reviews"
    # 3: a tiny random judge writes no score pair, so reviews are listed as failed (the exit-status contract)
    assert RM_review.main(common + ["--input_dir", str(answers), "--output_dir", str(reviews)]) == 3
    reviewed = json.loads((reviews / "comment_test.json").read_text())
    assert server.app.engine.stats["rows"] - rows_before == 2 * 8, "eight judge requests per sample"
    samples, _ = load_test_samples(answers / "comment_test.json")
    sample = samples[0]
    metric = sorted(reviewed[0]["rm_review"])[0]
    judge = review_request(sample, metric, "presented", str(images))
    path = image_path(image_folder, pictures[sample.image])
    parts = [{"image": path} if "image" in part else part for part in judge.query]
    assert reviewed[0]["rm_review"][metric]["review"] == expected_chat(
        tiny, from_list_format(parts), system=judge.system, images=[(path, pictures[sample.image])])
    assert len(reviewed[0]["rm_review"]) == 8


# --- the command line ----------------------------------------------------------------------------

@pytest.mark.slow  # starts serve.py as a process
def test_command_line_server_with_key_file_and_clean_shutdown(tiny, tmp_path):
    folder, _, _ = tiny
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    repo = REPO
    process = subprocess.Popen(
        [sys.executable, str(repo / "serve.py"), "--model_path", str(folder), "--port", "0", "--api_key_file",
         str(key_file), "--served_model_name", "cli-agent", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving cli-agent at http://127.0.0.1:"), line
        base_url = line.split()[3]
        cli = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
        reply = cli.chat.completions.create(model="cli-agent", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
        assert reply.model == "cli-agent" and reply.usage.completion_tokens >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "POST /v1/chat/completions" in stderr and API_KEY not in stderr


def test_growing_decode_equals_decoding_everything(tiny):
    """The engine decodes a growing reply (for stop strings and streams) without decoding it all per token."""
    import random

    from mmrole.serve.engine import _GrowingDecode

    _, _, tokenizer = tiny
    rng = random.Random(1)
    pool = list(range(300)) + tokenizer.encode("中文测试éü😀 hello") + [tokenizer.im_end_id, tokenizer.ref_start_id]
    for trial in range(300):
        ids = [rng.choice(pool) for _ in range(rng.randint(1, 60))]
        growing = _GrowingDecode(tokenizer)
        for end in range(1, len(ids) + 1):
            assert growing.text(ids[:end]) == tokenizer.decode(ids[:end], errors="replace"), (trial, ids[:end])
