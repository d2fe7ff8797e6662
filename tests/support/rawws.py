"""A minimal blocking WebSocket client for protocol-level tests (text frames only).

Enough to send hand-written (including malformed) sync-protocol messages and read the server's
replies; real clients are used everywhere else.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any
from urllib.parse import urlparse


class RawWebSocket:
    """Connect to ``ws://host:port/path``; ``send_text``/``recv_json``/``recv_frame``."""

    def __init__(self, http_url: str, path: str = "/api/sync", timeout_s: float = 10.0) -> None:
        u = urlparse(http_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("connection closed during handshake")
            head += chunk
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            raise ConnectionError(f"upgrade refused with HTTP {self.status}")

    def send_text(self, text: str) -> None:
        """Send one masked text frame."""
        payload = text.encode()
        header = bytearray([0x81])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += struct.pack(">H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def send_json(self, msg: dict[str, Any]) -> None:
        """Send a JSON message."""
        self.send_text(json.dumps(msg))

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf

    def recv_frame(self) -> tuple[int, bytes]:
        """Return (opcode, payload) of the next frame (1 text, 8 close, 9 ping, 10 pong)."""
        b0, b1 = self._recv_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._recv_exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._recv_exact(8))[0]
        return b0 & 0x0F, self._recv_exact(n)

    def recv_json(self) -> dict[str, Any]:
        """Return the next text message as JSON, skipping ping/pong frames.

        Raises:
            ConnectionError: the server closed the socket.
        """
        while True:
            op, payload = self.recv_frame()
            if op == 1:
                return dict(json.loads(payload))
            if op == 8:
                raise ConnectionError("server closed the socket")

    def close(self) -> None:
        """Close the TCP connection."""
        self.sock.close()
