"""ConvexGateway errors from a server that is not a Convex deployment: one line, the body's start only.

The server is a real HTTP server on loopback (``http.server``) answering every call with an HTML
page, as a web server or proxy at a wrong ``CONVEX_URL`` would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.errors import GatewayError
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


@pytest.fixture
def html_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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
    assert len(message) < 300
