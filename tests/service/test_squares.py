"""``GET /?n=x``: squares of decimal numbers, and 400 (never 500) for everything else."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from blacklist_devtools.http import get
from blacklist_service import create_app
from blacklist_service.http.square import SquareFastPath
from blacklist_service.http.squares import BadNumberError, square
from tests.service.processes import ServiceFactory

SQUARES = [
    ("88", "7744.0"),
    ("9", "81.0"),
    ("9.7", "94.08999999999999"),
    ("-3", "9.0"),
    ("+2", "4.0"),
    ("0", "0.0"),
    ("-0", "0.0"),
    (".5", "0.25"),
    ("5.", "25.0"),
    ("1e3", "1000000.0"),
    ("2.5E-1", "0.0625"),
    ("1e154", "1e+308"),
]
BAD_INPUTS = [
    "abc",
    "0x10",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "1_0",
    " 1",
    "1 ",
    "1e",
    ".",
    "--1",
    "1,5",
    "١٢",  # Arabic-Indic digits: float() takes them, a decimal number they are not
    "1e200",
    "1e400",
    "9" * 400,
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    """A test client of an app without background work (stateless here: shared by examples)."""
    state_dir = tmp_path_factory.mktemp("state")
    app = create_app({"STATE_DIR": str(state_dir), "BACKGROUND": False, "TESTING": True})
    with app.test_client() as test_client:
        yield test_client


@pytest.mark.parametrize(("raw", "expected"), SQUARES)
def test_squares_like_python(raw: str, expected: str) -> None:
    assert repr(square(raw)) == expected


@pytest.mark.parametrize("raw", [None, "", *BAD_INPUTS])
def test_refuses_what_is_not_a_decimal_number(raw: str | None) -> None:
    with pytest.raises(BadNumberError) as caught:
        square(raw)
    assert "\n" not in str(caught.value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_float_written_out_squares_as_python_does(number: float) -> None:
    raw = repr(number)
    if math.isfinite(number * number):
        assert square(raw) == number * number
    else:
        with pytest.raises(BadNumberError):
            square(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_text_gets_a_square_or_a_400_never_a_500(client: FlaskClient, raw: str) -> None:
    answer = client.get("/", query_string={"n": raw})
    assert answer.status_code in {200, 400}
    body = answer.get_data(as_text=True)
    if answer.status_code == 200:
        assert float(body) == float(raw) * float(raw)
    else:
        assert body.count("\n") == 1


def test_the_server_answers_squares_and_bad_inputs(service_factory: ServiceFactory) -> None:
    service = service_factory()
    for raw, expected in SQUARES:
        answer = get(f"{service.url}/?n={raw.replace('+', '%2B')}")
        assert (answer.status, answer.body) == (200, expected), raw
        assert answer.headers["content-type"].startswith("text/plain")
    for url in ["/", "/?n=", "/?n=abc", "/?n=0x10", "/?n=nan", "/?n=inf", "/?n=1_0", "/?n=1e200"]:
        answer = get(f"{service.url}{url}")
        assert answer.status == 400, url
        assert answer.body.endswith("\n")
        assert answer.body.count("\n") == 1


Answer = tuple[str, list[tuple[str, str]], bytes]


def _answer(app: object, query: str, method: str = "GET", host: str | None = "localhost") -> Answer:
    """Status line, headers and body of ``app`` (a WSGI callable) for ``method /?query``.

    ``host`` is the ``Host`` header (None: none, as from an HTTP/1.0 client).
    """
    environ = EnvironBuilder(path="/", query_string=query, method=method).get_environ()
    if host is None:
        del environ["HTTP_HOST"]
    else:
        environ["HTTP_HOST"] = host
    body, status, headers = run_wsgi_app(app, environ)  # type: ignore[arg-type]
    return status, list(headers.items()), b"".join(body)


@pytest.fixture(scope="module")
def flask_only(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """An app whose requests reach Flask alone (no middleware in front)."""
    state_dir = tmp_path_factory.mktemp("state")
    return create_app({"STATE_DIR": str(state_dir), "BACKGROUND": False, "TESTING": True})


QUERIES = [
    *(f"n={raw}" for raw, _ in SQUARES if "+" not in raw),
    *(f"n={raw}" for raw in BAD_INPUTS if raw.isascii() and " " not in raw),
    "n=8%38",
    "n=%2B2",
    "n=+2",
    "n=88&n=99",
    "m=1&n=88",
    "n=88&",
    "n=",
    "",
    "n=" + "9" * 200,
    "n=" + "9" * 201,
]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_the_fast_path_answers_exactly_as_flask(flask_only: Flask, query: str, method: str) -> None:
    flask_app = Flask.wsgi_app.__get__(flask_only)  # Flask's own dispatch, nothing in front
    fast = SquareFastPath(flask_app)
    assert _answer(fast, query, method) == _answer(flask_app, query, method)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.eE+-%&n=x ", max_size=24))
def test_any_query_gets_the_same_answer_from_the_fast_path(flask_only: Flask, query: str) -> None:
    flask_app = Flask.wsgi_app.__get__(flask_only)
    assert _answer(SquareFastPath(flask_app), query) == _answer(flask_app, query)


# Host headers: those Werkzeug binds, and those it refuses with 400 on every route
# (an empty label, a label over 63 characters); then shapes in between.
HOSTS = [
    None,
    "",
    "localhost",
    "localhost:5004",
    "127.0.0.1:5004",
    "[::1]:5004",
    "[::1]",
    "a" * 63,
    "a" * 63 + "." + "b" * 63 + ".example",
    "a" * 64,
    "a" * 64 + ":5004",
    "x." + "a" * 64 + ".example",
    "a..b",
    ".a",
    "a.",
    "...",
    ".",
    "a..b:5004",
    "xn--",
    "xn--zz",
    "Example.COM",
    "a b",
    "a_b",
    "é.example",
    "1.2.3.4:0",
    "a:99999",
    "a:",
]


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("query", ["n=2", "n=1e200", "n=abc"])
def test_the_fast_path_answers_every_host_as_flask(
    flask_only: Flask, host: str | None, query: str
) -> None:
    flask_app = Flask.wsgi_app.__get__(flask_only)
    assert _answer(SquareFastPath(flask_app), query, host=host) == _answer(
        flask_app, query, host=host
    )


def test_a_host_werkzeug_refuses_is_a_400_on_the_fast_path_too(flask_only: Flask) -> None:
    fast = SquareFastPath(Flask.wsgi_app.__get__(flask_only))
    for host in ["a" * 64, "a..b", ".a"]:
        assert _answer(fast, "n=2", host=host)[0] == "400 BAD REQUEST", host


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab.-:[]1_é ", max_size=70) | st.builds("a".__mul__, st.integers(55, 70)))
def test_any_host_gets_the_same_answer_from_the_fast_path(flask_only: Flask, host: str) -> None:
    flask_app = Flask.wsgi_app.__get__(flask_only)
    assert _answer(SquareFastPath(flask_app), "n=2", host=host) == _answer(
        flask_app, "n=2", host=host
    )


def test_the_fast_path_answers_plain_squares_without_flask() -> None:
    def flask_stand_in(environ: dict[str, object], start_response: object) -> list[bytes]:
        raise AssertionError(f"reached Flask: {environ['QUERY_STRING']}")

    assert _answer(SquareFastPath(flask_stand_in), "n=88") == (
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "6")],
        b"7744.0",
    )
