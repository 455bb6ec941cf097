"""``GET /?n=x``: the square of a decimal number, as text.

Two ways in, one answer. The blueprint is the route Flask knows (every
method, every query string). In front of Flask, :class:`SquareFastPath`
answers the common call, ``GET /?n=<plain number>`` alone in the query, with
the same status, headers and body, but without building a request context: on
this route Flask's dispatch is most of the cost of a request. Anything it
does not recognise, or a number without a finite square, goes on to Flask.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response, request

from blacklist_service.metrics import StartResponse, WsgiApp
from blacklist_service.squares import MAX_LENGTH, BadNumberError, square

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


class SquareFastPath:
    """WSGI middleware answering ``GET /?n=<number>`` as :func:`square_of_n` does."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The square, or the request passed on to Flask untouched."""
        if environ.get("PATH_INFO") == "/" and environ.get("REQUEST_METHOD") == "GET":
            match = _PLAIN_QUERY.fullmatch(environ.get("QUERY_STRING", ""))
            if match is not None:
                try:
                    body = repr(square(match.group(1))).encode()
                except BadNumberError:
                    pass  # Flask words the 400
                else:
                    start_response("200 OK", [_CONTENT_TYPE, ("Content-Length", str(len(body)))])
                    return [body]
        return self.app(environ, start_response)
