"""mitp serve under hostile input: body limits hold while a body streams, image pixels are limited from
the header, malformed JSON is a 4xx naming the field, and a full server answers 503 with Retry-After."""

import io
import socket
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image

from mitp import Classifier
from mitp.app.serve import create_app, running


@pytest.fixture(scope="module")
def server(tiny_run):
    app = create_app(Classifier.from_pretrained(tiny_run), max_upload_mb=1, max_body_mb=2, max_pending=2,
                     max_image_pixels=100_000)
    with running(app) as url:
        yield url


def raw_request(url: str, head: bytes, chunks, pause: float = 0.0) -> bytes:
    """Send a request by hand (headers, then body chunks); return what the server answered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer is waiting
        answer = b""
        try:
            while part := sock.recv(65536):
                answer += part
        except ConnectionResetError:
            pass
    return answer


def chunked(data_chunks):
    for data in data_chunks:
        yield f"{len(data):x}\r\n".encode() + data + b"\r\n"
    yield b"0\r\n\r\n"


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(server):
    sent = []

    def body():  # 8 MB in 64 KB chunks, four times the 2 MB limit; stop counting once refused
        for data in chunked([b"[" + b"1," * 32767] * 128):
            sent.append(len(data))
            yield data

    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    answer = raw_request(server, head, body())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"refused while it was being sent" in answer
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_a_declared_length_over_the_limit_is_refused_before_reading(server):
    head = (b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 641000000\r\n\r\n")
    answer = raw_request(server, head, [b"{"])
    assert answer.startswith(b"HTTP/1.1 413") and b"641,000,000 bytes is over the 2,097,152-byte limit" in answer


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height and whose data is far too short: decoding it would fail."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_image_pixels_are_limited_from_the_header_before_decoding(server):
    reply = httpx.post(f"{server}/predict", files={"image": ("x.png", png_header_claiming(13000, 13000), "image/png")},
                       data={"text": "x"})
    assert reply.status_code == 413
    assert reply.json()["detail"] == ("image: 13000 x 13000 = 169,000,000 pixels is over the 100,000-pixel limit "
                                      "of this server (--max-image-pixels)")
    buffer = io.BytesIO()
    Image.new("L", (400, 300)).save(buffer, "PNG")  # a real, valid 120,000-pixel image is refused as well
    reply = httpx.post(f"{server}/predict", files={"image": ("x.png", buffer.getvalue(), "image/png")})
    assert reply.status_code == 413 and "120,000 pixels" in reply.json()["detail"]


@pytest.mark.parametrize("body, status, detail", [
    (b'{"text": "\\ud800"}', 400, "text: not valid Unicode"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "body: nested too deeply to read"),
    (b'{"text": ["a"]}', 422, "text: Input should be a valid string"),
    (b'{"items": [{"text": {"a": 1}}]}', 422, "items[0].text: Input should be a valid string"),
])
def test_malformed_json_is_a_4xx_naming_the_field_without_reprs(server, body, status, detail):
    url = f"{server}/predict/batch" if b"items" in body else f"{server}/predict"
    for target in {url, f"{server}/predict/batch"}:
        reply = httpx.post(target, content=body, headers={"content-type": "application/json"})
        if target == url:
            assert reply.status_code == status and reply.json()["detail"].startswith(detail), reply.text
        assert reply.status_code < 500 and " at 0x" not in reply.text


def test_a_full_server_answers_503_with_retry_after_and_recovers(server):
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    slow = [socket.create_connection(tuple(server.removeprefix("http://").split(":")[:1]) +
                                     (int(server.rsplit(":", 1)[1]),)) for _ in range(2)]
    try:
        for sock in slow:  # two requests that hold their slots: headers sent, the body never finished
            sock.sendall(head + b'{"text": "')
        time.sleep(0.3)
        reply = httpx.post(f"{server}/predict", json={"text": "x"})
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
        assert "server busy" in reply.json()["detail"]
    finally:
        for sock in slow:
            sock.close()
    deadline = time.monotonic() + 10
    while httpx.post(f"{server}/predict", json={"text": "x"}).status_code == 503:
        assert time.monotonic() < deadline, "the slots of closed connections were never released"
        time.sleep(0.1)
    assert httpx.post(f"{server}/predict", json={"text": "x"}).status_code == 200


def test_an_image_over_pils_own_bomb_limit_is_refused_the_same_way(server):
    reply = httpx.post(f"{server}/predict", files={"image": ("x.png", png_header_claiming(20000, 20000), "image/png")})
    assert reply.status_code == 413 and reply.json()["detail"].startswith("image: ")
