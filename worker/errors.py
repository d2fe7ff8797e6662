"""Exception hierarchy of the worker.

```
WorkerError
├── ConfigError                  start-up only → exit code 2
├── GatewayError
│   ├── TransientGatewayError    timeouts, connection loss, HTTP 5xx → retried by the gateway
│   └── PermanentGatewayError    ConvexError, bad arguments, unknown function → not retried
│       └── AuthenticationError  the deployment rejected the admin key or token (HTTP 401)
└── ImportFailedError            a Takeout import stopped; says what was already committed
    └── ImportInterruptedError   … because it was cancelled (SIGINT/SIGTERM)
```

Parsing errors of Takeout files live in :mod:`worker.takeout` (``TakeoutFormatError``).
"""

from __future__ import annotations

import re
from typing import Any

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Characters that break or garble a message line: C0/C1 controls and the Unicode line separators."""


def printable(text: str) -> str:
    """Return ``text`` with control characters (a line break…) escaped as ``\\n``…, so a message stays one line."""
    return _CONTROL_RE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def shorten(value: str, limit: int = 60) -> str:
    """Return ``value`` cut to ``limit`` characters, an ellipsis marking the cut (quoted values in messages)."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """Return ``count`` with ``noun`` in the singular or plural (``1 view``, ``2 views``, ``0 entries``).

    Args:
        count: How many.
        noun: The singular.
        nouns: The plural when it is not ``noun`` + "s" (``"entries"``, ``"batches"``).
    """
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


class WorkerError(Exception):
    """Base class of every error raised on purpose by the worker."""


class ConfigError(WorkerError):
    """The configuration is missing or invalid; raised at start-up only."""


class GatewayError(WorkerError):
    """A call to the Convex deployment failed.

    Attributes:
        function: The Convex function path (``"module:export"``) or endpoint that failed.
    """

    def __init__(self, message: str, *, function: str = "") -> None:
        super().__init__(message)
        self.function = function


class TransientGatewayError(GatewayError):
    """A failure that may succeed when retried: timeout, connection loss, HTTP 5xx."""


class PermanentGatewayError(GatewayError):
    """A failure that will fail again: the function threw, arguments were rejected, unknown function.

    Attributes:
        code: The ``code`` field of a ``ConvexError``'s data, when the function threw one.
        data: The full ``ConvexError`` data, or None.
    """

    def __init__(self, message: str, *, function: str = "", code: str | None = None, data: Any = None) -> None:
        super().__init__(message, function=function)
        self.code = code
        self.data = data


class AuthenticationError(PermanentGatewayError):
    """The deployment rejected the credentials (admin key or user token).

    Attributes:
        url: The deployment that rejected them ("" when unknown).
        reason: The deployment's own words (``BadAdminKey: The provided admin key was invalid for
            this instance.``), without the URL; the whole message when unknown.
    """

    def __init__(
        self, message: str, *, function: str = "", code: str | None = None, url: str = "", reason: str = ""
    ) -> None:
        super().__init__(message, function=function, code=code)
        self.url = url
        self.reason = reason or message


class ImportFailedError(WorkerError):
    """An import stopped part-way.

    Attributes:
        committed_batches: Number of batches committed before the failure (they stay imported;
            importing the same file again skips them as duplicates).
        inserted: Events of those batches that were new (inserted).
        duplicates: Events of those batches that were already stored (committed as no-ops).
        failure: What failed, without what is committed and the advice to import again (the
            message's first sentence); the message itself when it has no such part.
    """

    def __init__(
        self, message: str, *, committed_batches: int, inserted: int, duplicates: int = 0, failure: str | None = None
    ) -> None:
        super().__init__(message)
        self.committed_batches = committed_batches
        self.inserted = inserted
        self.duplicates = duplicates
        self.failure = message if failure is None else failure


class ImportInterruptedError(ImportFailedError):
    """An import was cancelled part-way (the CLI cancels it on SIGINT or SIGTERM); same attributes."""
