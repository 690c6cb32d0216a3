"""``mitp serve``: a run or an exported model behind HTTP, with a web page at ``/``."""

from __future__ import annotations

import socket

from mitp.data.images import DEFAULT_MAX_IMAGE_PIXELS

from ..errors import UserError
from ..extras import require
from ._args import add_runtime, picked, port_number, positive_int

HELP = "serve a run or an exported model over HTTP (API + web page)"
DESCRIPTION = (
    "Serve RUN_OR_DIR over HTTP: POST /predict, POST /predict/batch, "
    "GET /health, GET /labels, POST /explain, the OpenAPI docs at /docs "
    "and a web page at /. Concurrent requests are grouped into batches."
)


def add_arguments(p) -> None:
    p.add_argument("path", metavar="RUN_OR_DIR", help="a run directory or a folder written by `mitp export`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default: 8000)")
    p.add_argument("--max-batch", type=positive_int, default=16, help="most pairs one model batch takes (default: 16)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        help="how long a request waits for others to share its batch (default: 10)",
    )
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image accepted (default: 10 MB)")
    p.add_argument(
        "--max-body-mb",
        type=float,
        help="largest request body, refused while it streams (default: 32 MB, or twice --max-upload-mb)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help=f"most pixels an image may decode to, checked from its header before decoding "
        f"(default: {DEFAULT_MAX_IMAGE_PIXELS:,})",
    )
    p.add_argument(
        "--max-pending",
        type=positive_int,
        default=64,
        help="requests in the server at once; more get 503 with Retry-After (default: 64)",
    )
    p.add_argument(
        "--drain-refused-s",
        type=float,
        default=5.0,
        help="a request refused with 503 has its body read (and dropped) for up to this long first, "
        "so an uploading client gets the 503 and not a reset connection; 0: answer and close at "
        "once (more throughput under overload, uploads may see resets) (default: 5)",
    )
    add_runtime(p)


def run(args) -> int:
    require("serve", "mitp serve")
    import uvicorn

    # the model (torch or onnxruntime) and the web app: loaded when the command runs (`mitp --help` stays fast)
    from mitp.api import Classifier

    from ..serve import create_app

    if (
        args.max_wait_ms < 0
        or args.drain_refused_s < 0
        or args.max_upload_mb <= 0
        or (args.max_body_mb is not None and args.max_body_mb <= 0)
    ):
        raise UserError("--max-wait-ms and --drain-refused-s must be >= 0, --max-upload-mb and --max-body-mb > 0")
    classifier = Classifier.from_pretrained(args.path, runtime=args.runtime, quantized=args.quantized)
    limits = "max_batch max_wait_ms max_upload_mb max_body_mb max_pending drain_refused_s max_image_pixels"
    app = create_app(classifier, **picked(args, limits))
    listening = listen(args.host, args.port)  # before saying "serving": a busy port is one line, exit 2
    port = listening.getsockname()[1]
    print(
        f"serving {classifier.method} ({args.path}, {classifier.runtime}) on http://{args.host}:{port}/ "
        f"(API docs: /docs)",
        flush=True,
    )
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (the address uvicorn then serves on), or a UserError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UserError(f"--host {host}: cannot resolve it ({err.strerror})") from None
    listening = socket.socket(family, kind, proto)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind(address)
    except OSError as err:
        listening.close()
        raise UserError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror})") from None
    return listening
