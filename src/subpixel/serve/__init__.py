"""``subpixel serve``: a local web app to upscale images and videos in the browser.

One page (drop a file, pick model, scale and precision, compare before and after, download)
and the API beside it (``subpixel.serve.app``), on Starlette and uvicorn: the ``serve``
extra (``pip install "subpixel[serve]"``). Safe by default: bound to the loopback, uploads
and pixels limited, one image upscaled at a time (``subpixel.serve.queue``).

Example:
    >>> from subpixel.serve import create_app  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(create_app(), host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from subpixel.errors import MissingExtraError, SubpixelError

try:
    import python_multipart  # noqa: F401  (Starlette's form parser needs it)
    import starlette  # noqa: F401
    import uvicorn
except ImportError as error:
    raise MissingExtraError(
        f'the web app needs {error.name}: pip install "subpixel[serve]"'
    ) from error

from subpixel.serve.app import LOOPBACK_HOSTS, create_app
from subpixel.serve.queue import DEFAULT_MAX_UPLOAD, Limits

__all__ = [
    "DEFAULT_MAX_UPLOAD",
    "LOOPBACK_HOSTS",
    "Limits",
    "create_app",
    "listen",
    "run",
    "url_of",
]


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A socket listening on ``host``:``port`` (0: any free port).

    Raises:
        SubpixelError: the address cannot be used (in use, not this machine's, ...).
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        reason = error.strerror or str(error)
        raise SubpixelError(f"cannot listen on {host}:{port}: {reason}") from error


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a listening socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    *,
    device: str = "auto",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the app until interrupted (Ctrl-C, SIGTERM).

    On a loopback ``host`` only requests addressed to the loopback are answered, so a web
    page elsewhere cannot reach the server through DNS rebinding. ``on_ready(url)`` is called
    once the server listens.

    Raises:
        SubpixelError: the address cannot be used, or ``device`` is not this machine's.
    """
    sock = listen(host, port)
    loopback = host in LOOPBACK_HOSTS
    app = create_app(limits, device=device, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    if on_ready is not None:
        on_ready(url_of(sock))
    with sock:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
