"""``GET /?n=x``: the square of a decimal number, as text.

Two ways in, one answer. The blueprint is the route Flask knows (every
method, every query string). In front of Flask, :class:`SquareFastPath`
answers the common call, ``GET /?n=<plain number>`` alone in the query, with
the same status, headers and body, but without building a request context: on
this route Flask's dispatch is most of the cost of a request. Anything it
does not recognise, or a number without a finite square, goes on to Flask.
So does a request whose host Werkzeug refuses (a label over 63 characters,
``a..b``, ``.a``): Flask answers those 400 on every route, and the fast path
must not answer what Flask would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.wsgi import get_host

from blacklist_service.http.squares import MAX_LENGTH, BadNumberError, square
from blacklist_service.metrics import StartResponse, WsgiApp

blueprint = Blueprint("square", __name__)

# The whole query string is ``n=`` and characters that percent-decoding leaves as
# they are (no ``+``, no ``%``), so the raw text is what ``request.args`` would give.
_PLAIN_QUERY = re.compile(rf"n=([0-9.eE-]{{1,{MAX_LENGTH}}})")
_CONTENT_TYPE = ("Content-Type", "text/plain; charset=utf-8")


@blueprint.get("/")
def square_of_n() -> Response:
    """Answer ``float(n) * float(n)``, or 400 with the reason ``n`` is unusable."""
    try:
        value = square(request.args.get("n"))
    except BadNumberError as error:
        return Response(f"{error}\n", status=400, mimetype="text/plain")
    return Response(repr(value), mimetype="text/plain")


# Distinct hosts seen; clients send a handful, a hostile one may send many (then recomputed).
HOST_CACHE_SIZE = 256


@lru_cache(maxsize=HOST_CACHE_SIZE)
def host_is_accepted(
    host: str | None, server_name: str | None, server_port: str | None, scheme: str | None
) -> bool:
    """Whether Flask's URL map binds to a request with this host, as Werkzeug decides it.

    ``Map.bind_to_environ`` takes Werkzeug's ``get_host`` of the environ and
    IDNA-encodes it without its port; a name IDNA refuses (an empty label, one
    over 63 characters) is a 400 ``BadHost`` before any route runs.
    """
    environ = {"wsgi.url_scheme": scheme or "http"}
    for key, value in (
        ("HTTP_HOST", host),
        ("SERVER_NAME", server_name),
        ("SERVER_PORT", server_port),
    ):
        if value is not None:
            environ[key] = value
    name = get_host(environ).lower().partition(":")[0]
    try:
        name.encode("idna")
    except UnicodeError:
        return False
    return True


class SquareFastPath:
    """WSGI middleware answering ``GET /?n=<number>`` as :func:`square_of_n` does."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The square, or the request passed on to Flask untouched."""
        if environ.get("PATH_INFO") == "/" and environ.get("REQUEST_METHOD") == "GET":
            match = _PLAIN_QUERY.fullmatch(environ.get("QUERY_STRING", ""))
            if match is not None and host_is_accepted(
                environ.get("HTTP_HOST"),
                environ.get("SERVER_NAME"),
                environ.get("SERVER_PORT"),
                environ.get("wsgi.url_scheme"),
            ):
                try:
                    body = repr(square(match.group(1))).encode()
                except BadNumberError:
                    pass  # Flask words the 400
                else:
                    start_response("200 OK", [_CONTENT_TYPE, ("Content-Length", str(len(body)))])
                    return [body]
        return self.app(environ, start_response)
