"""`fer-bench serve`: an HTTP JSON API on Starlette and uvicorn (what the app already installs).

`POST /analyze` takes one image, as a multipart file (field `img`, `image` or `file`) or as JSON
`{"img": "data:image/...;base64,..."}` (never a server path or a URL), and answers every face in
deepface's `/analyze` shape (region with both eyes, face_confidence, dominant_emotion, emotion in
percent) plus fer_bench's `uncertain`, `cautions` and `model`. `POST /analyze/batch` takes up to
MAX_BATCH images (JSON `{"imgs": [...]}` or several files). `GET /health` says which model answers.
Errors come in deepface's shape, `{"error": "..."}`, with 400 (bad input), 401 (token), 413 (over the
size limit, counted on the bytes received and never read further), 415 (not an image) or 422 (no
image in the request). Faces are found and classified on a bounded pool of worker threads, so a
large image never holds up the event loop (`/health` stays prompt)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets

from ..errors import UserError
from ..data.faces import DEFAULT_DETECTOR
from .predict import FaceAnswer, LoadedRun, answer_photos

MAX_IMAGE_BYTES = 15 * 1024 * 1024
MAX_BATCH = 16
WORKERS = 2  # images analysed at once; the rest wait their turn
FIELDS = ("img", "image", "file")


class Refused(Exception):
    """An answer that is an error: its HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def deepface_record(answer: FaceAnswer) -> dict:
    """One face as deepface's /analyze describes it (percentages), with fer_bench's own additions."""
    box = answer.box or [None] * 4
    left_eye = right_eye = None
    if answer.eyes is not None:  # the person's right eye is on the image's left
        right_eye, left_eye = answer.eyes
    return {"region": {"x": box[0], "y": box[1], "w": box[2], "h": box[3], "left_eye": left_eye,
                       "right_eye": right_eye},
            "face_confidence": answer.confidence if answer.box is not None else 0.0,
            "dominant_emotion": answer.label,
            "emotion": {label: 100 * p for label, p in answer.probabilities.items()},
            "uncertain": answer.uncertain, "note": answer.sentence if answer.uncertain else None,
            "cautions": answer.cautions, "model": answer.model}


async def _body(request, limit: int) -> bytes:
    """The request body, read only up to `limit` bytes (a declared or actual excess is 413)."""
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"request larger than {limit // 2**20} MB")
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise Refused(413, f"request larger than {limit // 2**20} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def _from_data_uri(text) -> bytes:
    if not isinstance(text, str) or not text.startswith("data:image/") or ";base64," not in text:
        raise Refused(400, "an image is a base64 data URI (data:image/...;base64,...); paths and URLs are not read")
    try:
        return base64.b64decode(text.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, "the data URI's base64 is malformed") from None


async def _images(request, many: bool) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in a multipart or JSON request."""
    limit = MAX_IMAGE_BYTES * (MAX_BATCH if many else 1)
    kind = request.headers.get("content-type", "")
    body = await _body(request, limit)
    if kind.startswith("multipart/form-data"):
        from starlette.datastructures import UploadFile
        from starlette.requests import Request

        async def replay():  # the body read above (within the limit), once more for the form parser
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=MAX_BATCH, max_fields=MAX_BATCH)
        except Exception:  # Starlette's MultiPartException and friends: a malformed form
            raise Refused(400, "the multipart form is malformed") from None
        files = [value for key, value in form.multi_items() if key in FIELDS or (many and key == "imgs")]
        files = [f for f in files if isinstance(f, UploadFile)]
        images = [(f.filename or "upload", await f.read()) for f in files]
    elif kind.startswith("application/json"):
        try:
            payload = json.loads(body)
        except ValueError:
            raise Refused(400, "the request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise Refused(400, 'JSON requests are an object: {"img": "data:image/...;base64,..."}')
        items = payload.get("imgs") if many else [payload.get(next((k for k in FIELDS if k in payload), "img"))]
        if items is None or items == [None]:
            raise Refused(422, f"no image in the request (JSON key {'imgs' if many else 'img'})")
        if not isinstance(items, list):
            raise Refused(400, '"imgs" is a list of data URIs')
        images = [(f"img{k + 1}", _from_data_uri(item)) for k, item in enumerate(items)]
    else:
        raise Refused(415, "send the image as multipart/form-data (field img) or JSON with a base64 data URI")
    if not images:
        raise Refused(422, f"no image in the request (form field {' or '.join(FIELDS)})")
    if len(images) > (MAX_BATCH if many else 1):
        raise Refused(413 if many else 400, f"at most {MAX_BATCH if many else 1} image(s) a request")
    return images


def build_api(run: LoadedRun, token: str | None = None, detector: str = DEFAULT_DETECTOR):
    """The Starlette application answering with `run`."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from ..data.photos import read_image

    workers = asyncio.Semaphore(WORKERS)

    def analyse(name: str, data: bytes) -> list[dict]:
        try:
            photo = read_image(data, name)
        except UserError as problem:
            raise Refused(415, str(problem)) from None
        return [deepface_record(a) for a in answer_photos(run, [photo], detector)]

    def authorised(request) -> bool:
        given = request.headers.get("authorization", "")
        return token is None or secrets.compare_digest(given.encode(), f"Bearer {token}".encode())

    def endpoint(many: bool):
        async def handle(request):
            if not authorised(request):
                return JSONResponse({"error": "a bearer token is required"}, status_code=401)
            try:
                images = await _images(request, many)
                results = []
                for name, data in images:
                    async with workers:
                        results.append(await asyncio.to_thread(analyse, name, data))
            except Refused as refused:
                return JSONResponse({"error": str(refused)}, status_code=refused.status)
            return JSONResponse({"results": results} if many else {"results": results[0]})
        return handle

    async def health(request):
        return JSONResponse({"status": "ok", "model": run.name, "classes": list(run.class_names)})

    return Starlette(routes=[Route("/analyze", endpoint(False), methods=["POST"]),
                             Route("/analyze/batch", endpoint(True), methods=["POST"]),
                             Route("/health", health, methods=["GET"])])


def serve_api(run: LoadedRun, host: str = "127.0.0.1", port: int = 5005, token: str | None = None) -> None:
    import uvicorn

    uvicorn.run(build_api(run, token), host=host, port=port, log_level="warning")
