"""mitp serve under hostile input: body limits hold while a body streams, image pixels are limited from
the header, malformed JSON is a 4xx naming the field, and a full server answers 503 with Retry-After."""

import asyncio
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
    app = create_app(
        Classifier.from_pretrained(tiny_run), max_upload_mb=1, max_body_mb=2, max_pending=2, max_image_pixels=100_000
    )
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

    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = raw_request(server, head, body())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"refused while it was being sent" in answer
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_a_declared_length_over_the_limit_is_refused_before_reading(server):
    head = (
        b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 641000000\r\n\r\n"
    )
    answer = raw_request(server, head, [b"{"])
    assert answer.startswith(b"HTTP/1.1 413") and b"641,000,000 bytes is over the 2,097,152-byte limit" in answer


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height and whose data is far too short: decoding it would fail."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_image_pixels_are_limited_from_the_header_before_decoding(server):
    reply = httpx.post(
        f"{server}/predict",
        files={"image": ("x.png", png_header_claiming(13000, 13000), "image/png")},
        data={"text": "x"},
    )
    assert reply.status_code == 413
    assert reply.json()["detail"] == (
        "image: 13000 x 13000 = 169,000,000 pixels is over the 100,000-pixel limit of this server (--max-image-pixels)"
    )
    buffer = io.BytesIO()
    Image.new("L", (400, 300)).save(buffer, "PNG")  # a real, valid 120,000-pixel image is refused as well
    reply = httpx.post(f"{server}/predict", files={"image": ("x.png", buffer.getvalue(), "image/png")})
    assert reply.status_code == 413 and "120,000 pixels" in reply.json()["detail"]


@pytest.mark.parametrize(
    "body, status, detail",
    [
        (b'{"text": "\\ud800"}', 400, "text: not valid Unicode"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "body: nested too deeply to read"),
        (b'{"text": ["a"]}', 422, "text: Input should be a valid string"),
        (b'{"items": [{"text": {"a": 1}}]}', 422, "items[0].text: Input should be a valid string"),
    ],
)
def test_malformed_json_is_a_4xx_naming_the_field_without_reprs(server, body, status, detail):
    url = f"{server}/predict/batch" if b"items" in body else f"{server}/predict"
    for target in {url, f"{server}/predict/batch"}:
        reply = httpx.post(target, content=body, headers={"content-type": "application/json"})
        if target == url:
            assert reply.status_code == status and reply.json()["detail"].startswith(detail), reply.text
        assert reply.status_code < 500 and " at 0x" not in reply.text


def test_a_full_server_answers_503_with_retry_after_and_recovers(server):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    slow = [
        socket.create_connection(
            tuple(server.removeprefix("http://").split(":")[:1]) + (int(server.rsplit(":", 1)[1]),)
        )
        for _ in range(2)
    ]
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


def test_a_full_server_reads_an_upload_before_its_503_so_the_client_gets_the_answer(server):
    """Answering and closing while a client still uploads resets the connection: the client would see a
    broken connection, not the 503 that says when to retry."""
    hold = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    host, port = server.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port))) for _ in range(2)]
    sent = []

    def upload():  # 1 MB (under the 2 MB body limit) in 20 pieces, sent over about half a second
        for _ in range(20):
            sent.append(1)
            yield b"x" * 50_000

    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    try:
        for sock in slow:
            sock.sendall(hold + b'{"text": "')
        time.sleep(0.3)
        answer = raw_request(server, head, upload(), pause=0.025)
    finally:
        for sock in slow:
            sock.close()
    assert len(sent) == 20, "the server stopped reading the upload"
    assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower()
    assert b"connection: close" not in answer.lower()  # drained: the connection stays usable


def test_an_image_over_pils_own_bomb_limit_is_refused_the_same_way(server):
    reply = httpx.post(f"{server}/predict", files={"image": ("x.png", png_header_claiming(20000, 20000), "image/png")})
    assert reply.status_code == 413 and reply.json()["detail"].startswith("image: ")


@pytest.mark.parametrize("drain_s, reads, closes", [(5.0, 3, False), (0.0, 0, True)])
def test_drain_refused_s_decides_whether_a_refused_body_is_read_first(drain_s, reads, closes):
    """--drain-refused-s 0 answers a full server's 503 at once and closes, without reading the body."""
    from mitp.app.serve.limits import RequestLimits

    async def never_called(scope, receive, send):
        raise AssertionError("a refused request reached the app")

    chunks = [{"type": "http.request", "body": b"x" * 10, "more_body": more} for more in (True, True, False)]
    read, sent = [], []

    async def receive():
        read.append(1)
        return chunks[len(read) - 1]

    async def send(message):
        sent.append(message)

    limits = RequestLimits(never_called, max_body=100, max_pending=0, drain_s=drain_s)
    asyncio.run(limits({"type": "http", "method": "POST", "headers": []}, receive, send))
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 503 and headers[b"retry-after"] == b"1"
    assert len(read) == reads and (headers.get(b"connection") == b"close") == closes
