"""ConvexGateway credentials: surrounding whitespace dropped, a key that cannot be a header value refused unseen."""

from __future__ import annotations

import asyncio

import pytest

from worker.errors import ConfigError
from worker.gateway import ConvexGateway


def authorization(*, admin_key: str | None = None, user_token: str | None = None) -> str:
    async def build() -> str:
        async with ConvexGateway("http://127.0.0.1:1", admin_key=admin_key, user_token=user_token) as gateway:
            return str(gateway._http.headers["Authorization"])

    return asyncio.run(build())


class TestCredentials:
    def test_trailing_line_ending_is_dropped(self) -> None:
        """A key or token read from a file with a CR LF is sent without it (httpx would refuse every call)."""
        assert authorization(admin_key="convex-local|dev-secret\r\n") == "Convex convex-local|dev-secret"
        assert authorization(user_token=" eyJ.x.y\n") == "Bearer eyJ.x.y"

    @pytest.mark.parametrize("what", ["admin key", "token"])
    def test_inner_control_character_is_refused_without_the_value(self, what: str) -> None:
        """A line break inside is a configuration error naming its position, not a transient error quoting the key."""
        secret = "convex-local|dev\nsecret"
        with pytest.raises(ConfigError) as err:
            if what == "admin key":
                ConvexGateway("http://127.0.0.1:1", admin_key=secret)
            else:
                ConvexGateway("http://127.0.0.1:1", user_token=secret)
        assert str(err.value).startswith(f"the {what} is invalid: character 17 of 23 is a line feed (U+000A)")
        assert "secret" not in str(err.value) and "convex-local" not in str(err.value)
