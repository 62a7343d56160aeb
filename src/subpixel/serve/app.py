"""The web app: one static page and its API, on Starlette.

- ``GET /`` the page; ``GET /static/...`` its script and style.
- ``GET /api/models``: the models a request may name (scales, parameters, MACs per output
  pixel), the default, the precisions and the server's limits, as JSON.
- ``POST /api/upscale`` (multipart: the file in field ``image``; optional ``model``,
  ``scale``, ``precision``; optional query ``job`` to follow it): the upscaled file's bytes
  in the input's format, offered for download as ``NAME_xSCALE.EXT``.
- ``GET /api/jobs/{job}``: a job's state while it is handled (receiving, queued with how
  many ahead, upscaling with tiles or frames done).

Errors are JSON ``{"error": "..."}`` with a 4xx status for anything wrong with a request
(400 bad fields, 413 too big, 415 not an image or video, 422 corrupt, truncated or too many
pixels) and 503 when the queue is full. Requests from another site's page (a cross-origin
``Origin``) and, when bound to the loopback, for another host name (DNS rebinding) are
refused.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from subpixel.catalogue import COST_SCALES
from subpixel.devices import resolve_device
from subpixel.errors import MissingExtraError, SubpixelError
from subpixel.serve.queue import JobInUse, Limits, QueueFull, UploadTooLarge, WorkQueue, limit_body
from subpixel.serve.work import (
    PRECISION_CHOICES,
    Answer,
    BadRequest,
    Upscalers,
    parse_order,
    upscale_upload,
    usable_models,
)
from subpixel.weights import DEFAULT_MODEL

__all__ = ["LOOPBACK_HOSTS", "create_app"]

STATIC = Path(__file__).parent / "static"
#: Host names a server bound to the loopback answers to.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; frame-ancestors 'none'",
}


def create_app(
    limits: Limits | None = None,
    *,
    device: str = "auto",
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS,
) -> Starlette:
    """The app (an ASGI callable; ``uvicorn.run(create_app())`` serves it).

    Args:
        limits: upload size, pixels and waiting requests (default ``Limits()``).
        device: where the networks run (``subpixel.devices.resolve_device``).
        allowed_hosts: host names requests may be addressed to; None: any (a server bound
            to a public address).
    """
    limits = limits or Limits()
    queue = WorkQueue(limits.max_waiting)
    upscalers = Upscalers(resolve_device(device))
    usable_models()  # measured once here, not on the event loop at the first request

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=_SECURITY_HEADERS)

    async def models(request: Request) -> Response:
        entries = [
            {
                "name": entry.name,
                "scales": list(entry.scales),
                "parameters": entry.parameters,
                "macs_per_pixel": {f"x{s}": entry.macs_per_pixel[s] for s in COST_SCALES},
            }
            for entry in usable_models().values()
        ]
        return JSONResponse(
            {
                "models": entries,
                "default": DEFAULT_MODEL,
                "precisions": list(PRECISION_CHOICES),
                "max_upload": limits.max_upload,
                "max_pixels": limits.max_pixels,
            }
        )

    async def job_status(request: Request) -> Response:
        status = queue.status(request.path_params["job"])
        if status is None:
            return _error("no such job (not yet received, or already answered)", 404)
        return JSONResponse(status)

    async def upscale(request: Request) -> Response:
        if _cross_origin(request):
            return _error("requests from other sites' pages are refused", 403)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body:
            return _too_large(limits)
        job_id = request.query_params.get("job")
        if job_id is not None and not _JOB_ID.fullmatch(job_id):
            return _error("job must be 1 to 64 letters, digits, '-' or '_'", 400)
        try:
            with queue.admit(job_id) as job:
                limited = Request(request.scope, limit_body(request.receive, limits.max_body))
                async with limited.form(max_files=1, max_fields=8, max_part_size=2**10) as form:
                    upload = form.get("image")
                    if not isinstance(upload, UploadFile):
                        raise BadRequest("send the file in a multipart field named 'image'")
                    data = await upload.read()
                    fields = {k: v for k, v in form.items() if isinstance(v, str)}
                    order = parse_order(upload.filename, fields, data[:64])
                if len(data) > limits.max_upload:
                    return _too_large(limits)
                answer = await queue.run(
                    job,
                    lambda job: upscale_upload(
                        order, data, upscalers, limits.max_pixels, progress=job.progress
                    ),
                )
        except QueueFull:
            return _error("the server is busy with other images; try again shortly", 503, wait=5)
        except UploadTooLarge:
            return _too_large(limits)
        except JobInUse as error:
            return _error(str(error), 409)
        except BadRequest as error:
            return _error(str(error), error.status)
        except MissingExtraError as error:
            return _error(str(error), 415)
        except SubpixelError as error:
            return _error(str(error), 422)
        except ClientDisconnect:
            return _error("the upload was interrupted", 400)
        return _answer(answer)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return _error(str(error.detail), error.status_code)

    async def server_error(request: Request, error: Exception) -> Response:
        return _error(f"internal error: {type(error).__name__}", 500)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        queue.close()

    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/models", models),
            Route("/api/upscale", upscale, methods=["POST"]),
            Route("/api/jobs/{job}", job_status),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: http_error, 500: server_error},
        lifespan=lifespan,
    )


def _error(message: str, status: int, wait: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(wait)} if wait is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _too_large(limits: Limits) -> JSONResponse:
    mib = limits.max_upload / 2**20
    return _error(f"the upload is over the limit of {mib:g} MiB (the server's --max-upload)", 413)


def _cross_origin(request: Request) -> bool:
    """Whether a browser sent this from a page of another origin (a plain form post from a
    site on the web to this local server); clients without ``Origin`` (curl) pass."""
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc != request.headers.get("host", "")


def _answer(answer: Answer) -> Response:
    ascii_name = answer.filename.encode("ascii", "replace").decode().replace("?", "_")
    disposition = (
        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(answer.filename)}"
    )
    headers: dict[str, Any] = {"Content-Disposition": disposition, **_SECURITY_HEADERS}
    if answer.path is not None:
        return FileResponse(
            answer.path,
            media_type=answer.media_type,
            headers=headers,
            background=BackgroundTask(answer.cleanup),
        )
    return Response(answer.content, media_type=answer.media_type, headers=headers)
