"""``GET /?n=x``: the square of a decimal number, as text."""

from __future__ import annotations

from flask import Blueprint, Response, request

from blacklist_service.squares import BadNumberError, square

blueprint = Blueprint("square", __name__)


@blueprint.get("/")
def square_of_n() -> Response:
    """Answer ``float(n) * float(n)``, or 400 with the reason ``n`` is unusable."""
    try:
        value = square(request.args.get("n"))
    except BadNumberError as error:
        return Response(f"{error}\n", status=400, mimetype="text/plain")
    return Response(repr(value), mimetype="text/plain")
