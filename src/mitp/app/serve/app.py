"""The HTTP app of `mitp serve` (FastAPI): predict, batch predict, health, labels, explain and the page.

Every input error is a 4xx whose ``detail`` names the field (``image``, ``text``, ``items[3].image``,
``top_k``, ``body``); bodies and uploads larger than the limits are refused with 413 while they
stream, images with more pixels than ``max_image_pixels`` from their header, before decoding; more
than ``max_pending`` requests at once get 503 with ``Retry-After`` (limits.py). A failure inside one
request never stops the server. A sample may give only an image or only a text (the model sees a
blank for the other); each prediction lists the ``modalities`` it saw.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from mitp.api import NonFiniteOutput
from mitp.data.images import DEFAULT_MAX_IMAGE_PIXELS
from mitp.files import CheckpointError
from mitp.inputs import ImageTooLarge, InputError
from mitp.jsonio import JSONError, parse_json

from ..extras import missing
from .batcher import Batcher, Overloaded
from .limits import RequestLimits
from .page import PAGE


class PairIn(BaseModel):
    image: str | None = Field(None, description="the image file, base64-encoded (leave out if there is none)")
    text: str | None = Field(None, description="the text (leave out if there is none)")


class PredictIn(PairIn):
    top_k: int = Field(5, ge=1, description="labels to return (single-label tasks)")


class BatchIn(BaseModel):
    items: list[PairIn] = Field(min_length=1, description="image-text pairs")
    top_k: int = Field(5, ge=1)


def create_app(
    classifier,
    max_batch: int = 16,
    max_wait_ms: float = 10.0,
    max_upload_mb: float = 10.0,
    max_batch_items: int = 64,
    max_body_mb: float | None = None,
    max_pending: int = 64,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    drain_refused_s: float = 5.0,
) -> FastAPI:
    """The app; ``max_body_mb`` defaults to room for one upload at the limit, base64-encoded, and then some."""
    classifier = copy.copy(classifier)  # the server's own pixel limit, the caller's classifier unchanged
    classifier.max_image_pixels = max_image_pixels
    batcher = Batcher(classifier.logits, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_pending)
    limit = int(max_upload_mb * 2**20)
    max_body = int((max_body_mb if max_body_mb is not None else max(32.0, 2 * max_upload_mb)) * 2**20)
    if classifier.runtime != "torch":
        cannot_explain = f"the {classifier.runtime} runtime cannot explain (explain runs on PyTorch)"
    elif not classifier.can_explain:
        cannot_explain = f"method {classifier.method!r} inserts no prompts"
    else:
        cannot_explain = (
            "explain draws a figure: this server lacks matplotlib (pip install 'mitp[plots]')"
            if missing("plots")
            else None
        )
    explains = cannot_explain is None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="mitp",
        version="1",
        lifespan=lifespan,
        description=f"{classifier.method} on {classifier.config.backbone.spec}: "
        f"{classifier.labels.task}, {classifier.labels.num_classes} labels",
    )
    app.state.batcher = batcher
    app.add_middleware(RequestLimits, max_body=max_body, max_pending=max_pending, drain_s=drain_refused_s)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": _first_error(err.errors())}, 422)

    async def prepare(image: bytes | None, text: str | None, image_field: str, text_field: str):
        if image is not None and len(image) > limit:
            raise HTTPException(413, f"{image_field}: {len(image):,} bytes is over the {limit:,}-byte limit")
        try:
            return await asyncio.to_thread(classifier.prepare, image, text, image_field, text_field)
        except ImageTooLarge as err:
            raise HTTPException(413, f"{err} of this server (--max-image-pixels)") from None
        except InputError as err:
            raise HTTPException(400, str(err)) from None

    async def predict_samples(samples: list, top_k: int) -> list[dict]:
        try:
            logits = await batcher.logits(samples)
        except Overloaded as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "1"}) from None
        except CheckpointError as err:  # the model's own files failed on this batch: say so, not a traceback
            raise HTTPException(500, str(err)) from None
        try:
            predictions = classifier.to_predictions(logits, top_k, [s.modalities for s in samples])
        except NonFiniteOutput as err:
            raise HTTPException(500, str(err)) from None
        return [{"predictions": p, "modalities": list(p.modalities)} for p in predictions]

    def decode(data: str | None, field: str) -> bytes | None:
        if data is None:
            return None
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"{field}: not valid base64") from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE

    @app.get("/health")
    async def health() -> dict:
        stats = batcher.stats
        return {
            "status": "ok",
            "method": classifier.method,
            "backbone": classifier.config.backbone.spec,
            "runtime": classifier.runtime,
            "explain": explains,
            "requests": stats.requests,
            "batches": stats.batches,
            "largest_batch": stats.largest,
        }

    @app.get("/labels")
    async def labels() -> dict:
        return {"task": classifier.labels.task, "labels": list(classifier.labels.labels)}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        """One sample: multipart (``image`` file and/or ``text``, optional ``top_k``) or JSON (base64 ``image``)."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            image, text, top_k = await _form(request, limit)
        else:
            body = await _json(request, PredictIn)
            image, text, top_k = decode(body.image, "image"), body.text, body.top_k
        sample = await prepare(image, text, "image", "text")
        return (await predict_samples([sample], top_k))[0]

    @app.post(
        "/predict/batch",
        openapi_extra={
            "requestBody": {"content": {"application/json": {"schema": BatchIn.model_json_schema()}}, "required": True}
        },
    )
    async def predict_batch(request: Request) -> dict:
        """Several pairs as JSON: ``{"items": [{"image": base64, "text": ...}, ...], "top_k": 5}``."""
        body = await _json(request, BatchIn)
        if len(body.items) > max_batch_items:
            raise HTTPException(413, f"items: {len(body.items)} pairs, at most {max_batch_items} per request")
        samples = [
            await prepare(decode(item.image, f"items[{i}].image"), item.text, f"items[{i}].image", f"items[{i}].text")
            for i, item in enumerate(body.items)
        ]
        results = await predict_samples(samples, body.top_k)
        return {"predictions": [r["predictions"] for r in results], "modalities": [r["modalities"] for r in results]}

    @app.post("/explain", responses={200: {"content": {"image/png": {}}}})
    async def explain(image: Annotated[UploadFile, File()], text: Annotated[str, Form()]) -> Response:
        """The hub's similarity per step and the attention on prompts for one pair, as a PNG."""
        if not explains:
            raise HTTPException(404, cannot_explain)
        data = await image.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"image: over the {limit:,}-byte limit")
        try:
            from ..analysis.explain import explain_png  # torch, only where explain is served

            png = await asyncio.to_thread(explain_png, classifier, data, text)
        except InputError as err:
            raise HTTPException(400, str(err)) from None
        return Response(png, media_type="image/png")

    return app


async def _form(request: Request, limit: int) -> tuple[bytes | None, str | None, int]:
    form = await request.form(max_part_size=limit + 1)
    image, text, top_k = form.get("image"), form.get("text"), form.get("top_k", "5")
    if isinstance(image, str):
        raise HTTPException(422, "image: must be a file field")
    if image is None and text is None:
        raise HTTPException(422, "image: give a file field 'image', a field 'text' or both")
    try:
        top_k = int(top_k)
    except ValueError:
        raise HTTPException(422, f"top_k: expected an integer, got {top_k!r}") from None
    if top_k < 1:
        raise HTTPException(422, f"top_k: must be >= 1, got {top_k}")
    data = None if image is None else await image.read(limit + 1)
    if data is not None and len(data) > limit:
        raise HTTPException(413, f"image: over the {limit:,}-byte limit")
    return data, text, top_k


async def _json(request: Request, model: type[BaseModel]):
    from pydantic import ValidationError

    try:
        body = parse_json(await request.body())
    except JSONError as err:
        raise HTTPException(400, f"body: {err}; send multipart/form-data (image, text) or a JSON object") from None
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise HTTPException(422, _first_error(err.errors())) from None


def _first_error(errors: list) -> str:
    """``field: message`` of a validation error, never the offending input's repr."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".") or "body"
    return f"{field}: {first.get('msg', 'invalid')}"
