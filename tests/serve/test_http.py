"""The connection layer of mmrole.serve (uvicorn + mmrole.serve.http) against raw sockets: idle and slow clients,
the connection cap, malformed requests, clients that leave. Limits are small so that each case takes
about a second; none of these checks a speed."""

import json
import logging
import socket
import time

import pytest

from mmrole.serve.api import ServeConfig
from mmrole.serve.server import start_server

from tests.support.serve import MODEL_NAME

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_CONNECTIONS = 400


@pytest.fixture(scope="module")
def server(backend):
    config = ServeConfig(model_name=MODEL_NAME, header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT,
                         max_connections=MAX_CONNECTIONS)
    running = start_server(backend, config, port=0)
    yield running
    running.stop()


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def connect(server) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=10)
    return sock


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything until the server closes (or `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def exchange(server, raw: bytes, timeout: float = 10.0) -> bytes:
    with connect(server) as sock:
        sock.sendall(raw)
        return read_all(sock, timeout)


def chat_bytes(content="hi", max_tokens=3) -> bytes:
    body = json.dumps({"model": MODEL_NAME, "temperature": 0, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": content}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def status_and_body(response: bytes):
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def assert_no_traceback(log):
    assert "Traceback" not in log.text
    assert not [r for r in log.records if r.levelno >= logging.ERROR or r.exc_info], log.text[-2000:]


def test_300_idle_half_open_connections_do_not_stop_service(server, log):
    idle = []
    for k in range(300):
        sock = connect(server)
        if k % 3 == 1:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # half a head
        elif k % 3 == 2:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")  # half a body
        idle.append(sock)
    started = time.monotonic()
    status, body = status_and_body(exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, body = status_and_body(exchange(server, chat_bytes()))
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] is not None
    assert time.monotonic() - started < 5
    for sock in idle:
        sock.close()
    time.sleep(0.5)
    # Clients that close right after their head, or halfway through their body: logged, never a traceback.
    for raw in (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 80\r\n\r\n",
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 80\r\n\r\n{\"model\": "):
        for _ in range(20):
            with connect(server) as sock:
                sock.sendall(raw)
    time.sleep(0.5)
    assert exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert log.text.count('"POST /v1/chat/completions" 499 ') >= 40, "each client that left has its access line"
    assert_no_traceback(log)


def test_a_trickled_request_head_does_not_extend_its_deadline(server, log):
    with connect(server) as sock:
        sock.settimeout(0.2)
        started, answer = time.monotonic(), b""
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 200:  # a byte every 0.1 s: 20 s in all
            try:
                sock.send(bytes([byte]))
                answer = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if answer:
                break
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert HEADER_TIMEOUT <= elapsed < HEADER_TIMEOUT + 1.5
    with connect(server) as silent:  # a connection that says nothing is closed as well
        started = time.monotonic()
        assert read_all(silent).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < HEADER_TIMEOUT + 1.5
    assert_no_traceback(log)


def test_a_trickled_body_gets_408_within_the_body_deadline(server, log):
    with connect(server) as sock:
        sock.settimeout(0.2)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        started, answer = time.monotonic(), b""
        for _ in range(100):
            try:
                sock.send(b" ")
                answer += sock.recv(4096)
            except socket.timeout:
                continue
            if answer:
                break
        elapsed = time.monotonic() - started
    status, body = status_and_body(answer)
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
    assert b"connection: close" in answer.lower()
    assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + 1.5
    assert_no_traceback(log)


def test_connections_beyond_the_cap_get_503_and_are_closed(server, log):
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        with connect(server) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, body = status_and_body(read_all(extra))
        assert status == 503 and json.loads(body)["error"]["code"] == "overloaded"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert_no_traceback(log)


def test_malformed_requests_and_other_http_versions(server, log):
    garbage = exchange(server, b"\x16\x03\x01 SECRET-LOOKING GARBAGE\r\n\r\n")
    status, body = status_and_body(garbage)
    assert status == 400 and b"SECRET-LOOKING" not in garbage and json.loads(body)["error"]["code"] == "invalid_http"
    status, body = status_and_body(exchange(server, b"GET /health\r\n\r\n"))  # HTTP/0.9
    assert status == 400 and json.loads(body)["error"]
    status, body = status_and_body(exchange(server, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n"))
    assert status == 505 and json.loads(body)["error"]
    one_zero = exchange(server, b"GET /health HTTP/1.0\r\n\r\n")
    assert one_zero.startswith(b"HTTP/1.1 200") and status_and_body(one_zero)[1] == b'{"status": "ok"}'
    too_big = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    assert status_and_body(too_big)[0] == 431
    assert exchange(server, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
                            b"Content-Length: 2\r\n\r\n{}").startswith(b"HTTP/1.1 4")  # no protocol switch
    assert_no_traceback(log)


def test_keep_alive_and_refused_uploads(server):
    with connect(server) as sock:  # two requests on one connection
        sock.settimeout(10)
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status": "ok"}'):
                answer += sock.recv(4096)
    # An oversized upload announced with Expect: 100-continue is refused before the client sends it.
    with connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 999999999\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer
    # A refused request whose body was not read closes the connection (its body is never read and discarded).
    with connect(server) as sock:
        sock.sendall(b"POST /v1/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        answer = read_all(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 404") and b"connection: close" in answer.lower()


def test_open_files_limit_is_raised_for_the_connection_cap_or_refused(monkeypatch):
    from mmrole.serve import http as serve_http

    calls = []
    monkeypatch.setattr(serve_http.resource, "setrlimit", lambda kind, limits: calls.append(limits))
    monkeypatch.setattr(serve_http.resource, "getrlimit", lambda kind: (256, 100_000))
    serve_http.ensure_file_descriptors(1000)
    assert calls == [(1000 + serve_http.RESERVED_FILE_DESCRIPTORS, 100_000)]
    monkeypatch.setattr(serve_http.resource, "getrlimit", lambda kind: (256, 512))
    with pytest.raises(ValueError, match="ulimit -n"):
        serve_http.ensure_file_descriptors(1000)
