"""What the server tests share: a tiny checkpoint, images, raw HTTP, and the model's own one-at-a-time
answers to compare the server's with."""

import base64
import hashlib
import io
import json
from pathlib import Path

import openai
import pytest
from PIL import Image

from mmrole.backends.hf import HFBackend
from mmrole.serve.api import ServeConfig
from mmrole.serve.server import start_server

MODEL_NAME = "tiny-agent"
API_KEY = "sk-serve-test-0123456789abcdef"
MAX_TOKENS = 8


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mmrole.qwen_vl.loading import load_model_and_tokenizer
    from mmrole.demo.tiny import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny")
    write_tiny_checkpoint(folder, seed=0)
    model, tokenizer = load_model_and_tokenizer(folder, device="cpu")
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def backend(tiny):
    _, model, tokenizer = tiny
    return HFBackend(model=model, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def server(backend):
    running = start_server(backend, ServeConfig(model_name=MODEL_NAME, max_request_bytes=200_000), port=0)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Where expected_chat saves the images it shows the model."""
    return tmp_path_factory.mktemp("expected-images")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


def png_bytes(color, size=(24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_path(folder, data: bytes, extension: str = "png") -> str:
    """A file path for an image shown to chat() (named by content, so two images never share one)."""
    return str(Path(folder) / f"{hashlib.sha256(data).hexdigest()[:32]}.{extension}")


def expected_chat(tiny, query, history=(), system="You are a helpful assistant.", images=(), max_tokens=MAX_TOKENS):
    """One-at-a-time greedy chat() of the model; `images` = [(path, bytes)] present while it runs."""
    from mmrole.qwen_vl.generation.chat import chat

    _, model, tokenizer = tiny
    for path, data in images:
        Path(path).write_bytes(data)
    try:
        response, _ = chat(model, tokenizer, query, history=list(history), system=system, do_sample=False,
                           max_new_tokens=max_tokens)
    finally:
        for path, _ in images:
            Path(path).unlink(missing_ok=True)
    return response


def raw_request(server, method, path, body=b"", headers=None):
    """A plain HTTP exchange (for bodies the openai client would never send)."""
    import http.client

    host, port = server.address
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), data


def assert_clean_error(data: bytes, status: int):
    """An OpenAI-shaped error body with nothing internal in it."""
    body = json.loads(data)
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert {"message", "type", "param", "code"} <= set(body["error"])
    text = data.decode()
    for leak in ("Traceback", 'File "', "/tmp", "site-packages", "mmrole/", "Error:"):
        assert leak not in text, (status, text)
