"""mitp serve: the endpoints, errors that name the field, batching under load, and faults that must not
take the server down. Everything runs against 127.0.0.1 with bounded loops."""

import base64
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mitp import Classifier
from mitp.app.cli import main
from mitp.app.serve import create_app, running

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def classifier(tiny_run):
    return Classifier.from_pretrained(tiny_run)


@pytest.fixture(scope="module")
def server(classifier):
    app = create_app(classifier, max_batch=16, max_wait_ms=20, max_upload_mb=1)
    with running(app) as url:
        yield url, app


def image_bytes(toy_dataset, i=0) -> bytes:
    return (toy_dataset / "images" / f"test-{i:04d}.png").read_bytes()


def test_health_labels_and_openapi(server, classifier):
    url, _ = server
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["method"] == "mitp" and health["explain"] is True
    assert httpx.get(f"{url}/labels").json() == {"task": "single_label", "labels": list(classifier.labels.labels)}
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/health", "/labels", "/explain"} <= set(paths)


def test_predict_multipart_and_json_agree_with_the_api(server, classifier, toy_dataset):
    url, _ = server
    expected = classifier.predict([image_bytes(toy_dataset, 2)], ["apple amber"], top_k=3)[0]
    multipart = httpx.post(
        f"{url}/predict",
        files={"image": ("x.png", image_bytes(toy_dataset, 2), "image/png")},
        data={"text": "apple amber", "top_k": "3"},
    )
    assert multipart.status_code == 200 and multipart.json()["predictions"] == expected
    as_json = httpx.post(
        f"{url}/predict",
        json={"image": base64.b64encode(image_bytes(toy_dataset, 2)).decode(), "text": "apple amber", "top_k": 3},
    )
    assert as_json.json()["predictions"] == expected
    batch = httpx.post(
        f"{url}/predict/batch",
        json={
            "items": [
                {"image": base64.b64encode(image_bytes(toy_dataset, i)).decode(), "text": "berry"} for i in range(3)
            ],
            "top_k": 2,
        },
    )
    images = [image_bytes(toy_dataset, i) for i in range(3)]
    assert batch.json()["predictions"] == classifier.predict(images, ["berry"] * 3, top_k=2)


@pytest.mark.parametrize(
    "request_kwargs, status, field",
    [
        ({"files": {"image": ("x.png", b"garbage", "image/png")}, "data": {"text": "x"}}, 400, "image"),
        ({"data": {"top_k": "2"}, "files": {"other": ("x", b"1")}}, 422, "image"),  # neither image nor text
        ({"files": {"image": ("x.png", b"", "image/png")}}, 400, "image"),
        ({"json": {"image": "%%%", "text": "x"}}, 400, "image"),
        ({"json": {"top_k": 2}}, 400, "text"),  # neither image nor text
        ({"json": {"image": "aGk=", "text": "x", "top_k": 0}}, 422, "top_k"),
        ({"content": b"not json", "headers": {"content-type": "application/json"}}, 400, "body"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(server, toy_dataset, request_kwargs, status, field):
    url, _ = server
    reply = httpx.post(f"{url}/predict", **request_kwargs)
    assert reply.status_code == status, reply.text
    assert reply.json()["detail"].startswith(f"{field}:")


def test_one_modality_alone_is_predicted_as_the_api_predicts_it_and_says_what_it_saw(server, classifier, toy_dataset):
    url, _ = server
    image_only = classifier.predict(images=[image_bytes(toy_dataset, 1)], top_k=2)[0]
    text_only = classifier.predict(texts=["apple amber"], top_k=2)[0]
    reply = httpx.post(
        f"{url}/predict", files={"image": ("x.png", image_bytes(toy_dataset, 1), "image/png")}, data={"top_k": "2"}
    ).json()
    assert reply == {"predictions": image_only, "modalities": ["image"]}
    reply = httpx.post(f"{url}/predict", json={"text": "apple amber", "top_k": 2}).json()
    assert reply == {"predictions": text_only, "modalities": ["text"]}
    batch = httpx.post(
        f"{url}/predict/batch",
        json={
            "items": [{"text": "apple amber"}, {"image": base64.b64encode(image_bytes(toy_dataset, 1)).decode()}],
            "top_k": 2,
        },
    ).json()
    assert batch == {"predictions": [text_only, image_only], "modalities": [["text"], ["image"]]}


def test_an_empty_text_in_a_batch_names_its_item(server, toy_dataset):
    url, _ = server
    item = {"image": base64.b64encode(image_bytes(toy_dataset)).decode(), "text": "ok"}
    reply = httpx.post(f"{url}/predict/batch", json={"items": [item, {**item, "text": " "}]})
    assert reply.status_code == 400 and reply.json()["detail"].startswith("items[1].text:")


@pytest.mark.slow
def test_500_requests_from_32_clients_are_all_answered_correctly_in_batches(server, classifier, toy_dataset):
    url, app = server
    texts = ["apple amber", "berry", "cherry", "date", "elder"]
    images = [image_bytes(toy_dataset, i) for i in range(5)]
    expected = {(i, t): classifier.predict([images[i]], [texts[t]], top_k=2)[0] for i in range(5) for t in range(5)}
    before = app.state.batcher.stats.batches

    def one(n: int):
        i, t = n % 5, (n // 5) % 5
        with httpx.Client(timeout=60) as client:
            reply = client.post(
                f"{url}/predict",
                files={"image": ("x.png", images[i], "image/png")},
                data={"text": texts[t], "top_k": "2"},
            )
        return (i, t), reply.status_code, reply.json().get("predictions")

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(one, range(500)))
    assert all(status == 200 for _, status, _ in answers)
    for key, _, predictions in answers:
        assert [p["label"] for p in predictions] == [p["label"] for p in expected[key]]
        assert [p["score"] for p in predictions] == pytest.approx([p["score"] for p in expected[key]], abs=1e-5)
    batches = app.state.batcher.stats.batches - before
    assert batches < 500 and app.state.batcher.stats.largest > 1, "concurrent requests share batches"


def test_faults_do_not_take_the_server_down(server, toy_dataset):
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    # a client that disconnects in the middle of an upload
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b'Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name="image"; '
            b'filename="x.png"\r\n\r\n' + b"\x89PNG" * 100
        )
    # a 50 MB upload (the limit is 1 MB here) and a corrupt image
    big = httpx.post(
        f"{url}/predict", files={"image": ("big.png", b"0" * (50 * 2**20), "image/png")}, data={"text": "x"}, timeout=60
    )
    assert big.status_code == 413
    corrupt = httpx.post(
        f"{url}/predict", files={"image": ("x.png", image_bytes(toy_dataset)[:50], "image/png")}, data={"text": "x"}
    )
    assert corrupt.status_code == 400 and corrupt.json()["detail"].startswith("image:")
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    ok = httpx.post(
        f"{url}/predict", files={"image": ("x.png", image_bytes(toy_dataset), "image/png")}, data={"text": "x"}
    )
    assert ok.status_code == 200


def test_explain_returns_the_figure(server, toy_dataset):
    url, _ = server
    reply = httpx.post(
        f"{url}/explain",
        files={"image": ("x.png", image_bytes(toy_dataset), "image/png")},
        data={"text": "apple amber"},
    )
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    assert reply.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_is_served(server):
    url, _ = server
    page = httpx.get(url)
    assert page.status_code == 200 and '<input id="image"' in page.text and "/predict" in page.text


def test_serve_command_refuses_bad_settings(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert "argument --max-batch: must be an integer >= 1, got 0" in capsys.readouterr().err


def test_a_busy_port_is_one_line_before_anything_says_serving(tiny_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tiny_run), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert "serving" not in out and f"--port {port}: cannot listen on 127.0.0.1:{port}" in err


def test_an_undecodable_image_is_named_without_a_memory_address(server, monkeypatch):
    """PIL's messages hold the repr of the stream it read; a client is told what is wrong, not where it lived."""
    import io

    from PIL import Image

    def broken(source, *args, **kwargs):
        raise OSError(f"broken data stream when reading image file {source!r}")

    monkeypatch.setattr(Image, "open", broken)
    url, _ = server
    reply = httpx.post(f"{url}/predict", files={"image": ("x.png", io.BytesIO(b"x" * 40), "image/png")})
    assert reply.status_code == 400
    assert (
        reply.json()["detail"]
        == "image: cannot be decoded as an image (broken data stream when reading image file the image)"
    )


def test_a_batch_the_models_files_fail_on_is_a_500_naming_the_file_and_the_server_stays_up(tiny_run, toy_dataset):
    from mitp.files import CheckpointError

    classifier = Classifier.from_pretrained(tiny_run)

    def failing(samples):
        raise CheckpointError("EXPORT/model.onnx: failed on a batch (an index out of range)")

    classifier.logits = failing
    with running(create_app(classifier, max_wait_ms=1)) as url:
        reply = httpx.post(f"{url}/predict", json={"text": "berry"})
        assert reply.status_code == 500
        assert reply.json()["detail"] == "EXPORT/model.onnx: failed on a batch (an index out of range)"
        assert httpx.get(f"{url}/health").status_code == 200
