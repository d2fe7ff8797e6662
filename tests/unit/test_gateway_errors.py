"""ConvexGateway errors from a server that is not a Convex deployment: one line, the body's start only.

The server is a real HTTP server on loopback (``http.server``) answering every call with an HTML
page, as a web server or proxy at a wrong ``CONVEX_URL`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.errors import GatewayError, PermanentGatewayError, TransientGatewayError
from worker.gateway import ConvexGateway

PAGE = (
    "<!DOCTYPE HTML>\n<html>\n  <head><title>Error response</title></head>\n  <body>\n"
    + "<p>x</p>\n" * 200
    + "</body></html>\n"
)


class _HtmlPages(BaseHTTPRequestHandler):
    status = 501

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = PAGE.encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the access log
        pass


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a loopback port in a thread; yield its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def html_server() -> Iterator[str]:
    with _serving(_HtmlPages) as url:
        yield url


@pytest.mark.parametrize("status", [501, 200])
def test_html_answer_gives_a_one_line_error(html_server: str, status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 5xx HTML page or a 200 that is not JSON: the error names the function and status on one short line."""
    monkeypatch.setattr(_HtmlPages, "status", status)

    async def call() -> None:
        async with ConvexGateway(html_server, admin_key="k", max_attempts=1, max_backoff_s=0.01) as gw:
            await gw.query("worker:pendingChanges", {})

    with pytest.raises(GatewayError) as info:
        asyncio.run(call())
    message = str(info.value)
    assert message.startswith(f"worker:pendingChanges: HTTP {status}")
    assert "\n" not in message and "<!DOCTYPE HTML> <html> <head>" in message
    assert len(message) < 400  # the body cut short (and for 501 a hint), not the whole page


class _JsonAnswers(BaseHTTPRequestHandler):
    """Answers every call with ``body`` and ``status``; counts the calls."""

    status = 200
    body = b'{"hello": "world"}'
    calls = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        type(self).calls += 1
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the access log
        pass


@pytest.fixture
def json_server() -> Iterator[str]:
    _JsonAnswers.calls = 0
    with _serving(_JsonAnswers) as url:
        yield url


async def _pending(url: str, attempts: int) -> None:
    async with ConvexGateway(url, admin_key="k", max_attempts=attempts, max_backoff_s=0.01) as gw:
        await gw.query("worker:pendingChanges", {})


@pytest.mark.parametrize(("status", "body"), [(200, b'{"hello": "world"}'), (200, b"[1, 2]"), (404, b"[]")])
def test_json_that_is_no_function_result_says_so(
    json_server: str, status: int, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON API that is not Convex: named as such, not "unknown error", and not retried."""
    monkeypatch.setattr(_JsonAnswers, "status", status)
    monkeypatch.setattr(_JsonAnswers, "body", body)
    with pytest.raises(PermanentGatewayError) as info:
        asyncio.run(_pending(json_server, attempts=3))
    assert str(info.value) == (
        f"worker:pendingChanges: HTTP {status} with JSON that is not a Convex function result: {body.decode()};"
        f" is {json_server} a Convex deployment?"
    )
    assert _JsonAnswers.calls == 1


@pytest.mark.parametrize(("status", "retried"), [(501, False), (505, False), (503, True)])
def test_not_implemented_is_not_retried(
    json_server: str, status: int, retried: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """501 and 505 say the server will never serve the API: refused at once; 503 is retried (up to 3 calls)."""
    monkeypatch.setattr(_JsonAnswers, "status", status)
    with pytest.raises(TransientGatewayError if retried else PermanentGatewayError) as info:
        asyncio.run(_pending(json_server, attempts=3))
    assert _JsonAnswers.calls == (3 if retried else 1)
    if not retried:
        assert str(info.value).endswith(f"does not implement Convex's HTTP API; is {json_server} a Convex deployment?")


@pytest.mark.parametrize(
    ("value", "detail"),
    [(b"[1, 2]", "ValueError: Bad JSON value: 1"), (b"null", "TypeError: 'NoneType' object is not iterable")],
)
def test_a_convex_reply_of_other_functions_is_one_error(
    json_server: str, value: bytes, detail: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment answering with values this project's functions never return: one PermanentGatewayError
    naming the function, the value and the likely cause (it was a Python traceback, exit 1)."""
    monkeypatch.setattr(_JsonAnswers, "body", b'{"status": "success", "value": ' + value + b"}")

    async def check() -> None:
        async with ConvexGateway(json_server, admin_key="k", max_attempts=1) as gw:
            await gw.validate_credentials()

    with pytest.raises(PermanentGatewayError) as info:
        asyncio.run(check())
    shown = "[1, 2]" if value == b"[1, 2]" else "None"
    assert str(info.value) == (
        f"worker:pendingChanges: unexpected result {shown} ({detail}); does {json_server} run this project's"
        " functions (npx convex deploy from convex/)?"
    )
    with pytest.raises(PermanentGatewayError, match="^admin:requestRecompute: unexpected result"):
        asyncio.run(_request_recompute(json_server))


async def _request_recompute(url: str) -> int:
    async with ConvexGateway(url, admin_key="k", max_attempts=1) as gw:
        return await gw.request_recompute("a|b")
