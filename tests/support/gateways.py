"""A Convex gateway for unit tests of how the gateway reads the deployment's answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.gateway import ConvexGateway


class AnsweringGateway(ConvexGateway):
    """A gateway whose mutations are recorded and answered with a fixed value."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__("http://127.0.0.1:1", admin_key="test")
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def mutation(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        self.calls.append((path, dict(args or {})))
        return self.answer
