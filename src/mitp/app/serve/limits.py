"""What keeps `mitp serve` bounded under hostile or heavy load, as one ASGI middleware.

- **Pending requests**: at most ``max_pending`` POST requests are in the server at once (reading,
  decoding, queued for or in a model batch); one more gets 503 with ``Retry-After``, so memory is
  bounded by ``max_pending x max_body`` whatever the load. Its body is read and dropped first
  (for at most ``drain_s`` seconds and ``max_body`` bytes, nothing kept): a server that answers
  and closes while the client is still uploading resets the connection, and the client sees a
  broken connection instead of the 503 that tells it to retry.
- **Body size**: a declared ``Content-Length`` over ``max_body`` is refused at once, and a body
  sent without one (chunked) is counted while it streams: the request fails with 413 as soon as
  the count passes the limit, never after reading it whole.
"""

from __future__ import annotations

import asyncio
import json


class _TooLarge(Exception):
    pass


class RequestLimits:
    """ASGI middleware: 413 for bodies over ``max_body`` bytes (streamed or declared), 503 over ``max_pending``."""

    def __init__(self, app, max_body: int, max_pending: int, retry_after_s: int = 1, drain_s: float = 5.0):
        self.app = app
        self.drain_s = drain_s
        self.max_body = max_body
        self.max_pending = max_pending
        self.retry_after = str(retry_after_s)
        self.pending = 0
        self.refused = {"413": 0, "503": 0}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            return await self._refuse(
                send,
                413,
                f"body: {int(declared):,} bytes is over the {self.max_body:,}-byte "
                "limit of this server (--max-body-mb)",
            )
        if self.pending >= self.max_pending:
            drained = self.drain_s > 0 and await self._drain(receive)
            return await self._refuse(
                send,
                503,
                f"server busy: {self.pending} requests pending (--max-pending); retry after {self.retry_after} s",
                {b"retry-after": self.retry_after},
                keep_alive=drained,
            )
        self.pending += 1
        received, over, started = 0, False, False

        async def counted_receive():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    over = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if over:  # whatever the app answers to the interrupted body, the client gets the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            pass
        finally:
            self.pending -= 1
        if over and not started:
            await self._refuse(
                send,
                413,
                f"body: over the {self.max_body:,}-byte limit of this server "
                "(--max-body-mb); refused while it was being sent",
            )

    async def _drain(self, receive) -> bool:
        """Read the request body to its end and drop it; False if it is over ``max_body`` bytes, slower
        than ``drain_s`` or the client left (then the connection is closed after the answer)."""

        async def read_all() -> bool:
            received = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                received += len(message.get("body", b""))
                if received > self.max_body:
                    return False
                if not message.get("more_body", False):
                    return True

        try:
            return await asyncio.wait_for(read_all(), self.drain_s)
        except asyncio.TimeoutError:
            return False

    async def _refuse(
        self, send, status: int, detail: str, extra: dict | None = None, keep_alive: bool = False
    ) -> None:
        self.refused[str(status)] += 1
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *([] if keep_alive else [(b"connection", b"close")]),
            *((k, v.encode()) for k, v in (extra or {}).items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
