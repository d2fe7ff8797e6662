"""The only module that talks to Convex.

Two channels, both parts of Convex's public API:

* **Subscriptions** use the official ``convex`` client (``ConvexClient``, WebSocket sync protocol),
  consumed with ``async for``: the synchronous iterator and the blocking ``query``/``mutation``
  calls of that client hold Python's GIL while they wait and have no timeout, and a backend outage
  makes them block indefinitely (observed behaviour of ``convex`` 0.8.1). The subscription is only a
  wake-up signal for the runner.
* **Calls** (queries and mutations) go to the deployment's HTTP function API
  (``POST /api/query`` / ``/api/mutation``, ``Authorization: Convex <admin key>``) through ``httpx``,
  with timeouts, encoded with the official client's value codec (``convex.values``). Transient
  failures (timeouts, connection errors, HTTP 5xx) are retried with ``tenacity``; nothing else is.

Every mutation the worker sends is idempotent (watermark guard, idempotent acknowledgements), so a
retry after an unknown outcome is safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final, Literal, Protocol

import httpx
import structlog
from convex import ConvexClient, ConvexError
from convex.values import convex_to_json, json_to_convex
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from worker.config import clean_secret
from worker.errors import (
    AuthenticationError,
    ConfigError,
    PermanentGatewayError,
    TransientGatewayError,
    shorten,
)
from worker.models import (
    AckOutcome,
    AppendedViews,
    ChangeEntry,
    Claim,
    DeadLetter,
    ExpiryOutcome,
    FailOutcome,
    LeaseRenewal,
    StoreOutcome,
    WatchEvent,
)

log = structlog.get_logger(__name__)

FunctionKind = Literal["query", "mutation", "action"]


def event_to_convex(event: WatchEvent, source: str) -> dict[str, Any]:
    """Encode a :class:`WatchEvent` as a ``WatchEventInput`` object (optional fields omitted)."""
    doc: dict[str, Any] = {
        "watchedAtMs": event.watched_at_ms,
        "kind": event.kind,
        "product": event.product,
        "source": source,
    }
    if event.video_id is not None:
        doc["videoId"] = event.video_id
    if event.title is not None:
        doc["title"] = event.title
    if event.channel_id is not None:
        doc["channelId"] = event.channel_id
    if event.channel_name is not None:
        doc["channelName"] = event.channel_name
    if event.flags:
        doc["flags"] = sorted(event.flags)
    return doc


def _appended_from_convex(raw: Mapping[str, Any] | None) -> AppendedViews | None:
    """Decode ``worker:claimUser``'s optional ``appended`` object."""
    if raw is None:
        return None
    return AppendedViews(
        after_seq=int(raw["afterSeq"]),
        through_seq=int(raw["throughSeq"]),
        events=tuple(event_from_convex(doc) for doc in raw["events"]),
    )


def _limit_args(limit: int, user_id: str | None) -> dict[str, Any]:
    """Arguments of an operator call taking ``limit`` and an optional ``userId``."""
    return {"limit": limit} if user_id is None else {"limit": limit, "userId": user_id}


def event_from_convex(doc: Mapping[str, Any]) -> WatchEvent:
    """Decode one ``worker:listEvents`` page element into a :class:`WatchEvent`."""
    flags = doc.get("flags")
    return WatchEvent(
        watched_at_ms=int(doc["watchedAtMs"]),
        kind=doc.get("kind", "watch"),
        product=doc.get("product", "youtube"),
        video_id=doc.get("videoId"),
        title=doc.get("title"),
        channel_id=doc.get("channelId"),
        channel_name=doc.get("channelName"),
        flags=frozenset(flags) if flags else frozenset(),
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def change_from_convex(doc: Mapping[str, Any], user_id: str | None = None) -> ChangeEntry:
    """Decode a change-log row (``{userId?, seq, kind, fromMs?, toMs?, count}``)."""
    return ChangeEntry(
        user_id=str(doc.get("userId", user_id)),
        seq=int(doc["seq"]),
        kind=doc["kind"],
        from_ms=_opt_int(doc.get("fromMs")),
        to_ms=_opt_int(doc.get("toMs")),
        count=int(doc.get("count", 0)),
    )


def data_hash(data: Any) -> str:
    """Digest of an aggregate's ``data``, sent as ``dataHash``: equal data, equal hash.

    BLAKE2b (16-byte digest, hex) of the canonical JSON text (sorted keys, no spaces, UTF-8).
    The backend trusts it (admin-only function) and does not rewrite a row whose stored hash and
    definition version match.
    """
    return _hash_text(canonical_json(data))


def canonical_json(data: Any) -> str:
    """Serialise ``data`` as canonical JSON (sorted keys, no spaces, UTF-8 text).

    Raises:
        ValueError: ``data`` holds NaN or an infinity (not valid JSON; the engine never emits them).
    """
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _excerpt(body: str, limit: int = 200) -> str:
    """The start of a response body on one line (whitespace runs collapsed), at most ``limit`` characters."""
    return shorten(" ".join(body.split()), limit)


def _hash_text(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class RawJson(str):
    """JSON text embedded as-is in a request body (already canonical; see :func:`canonical_json`)."""


def group_result_sets(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Group flat results into ``worker:storeAggregations`` sets, in first-seen filter-key order.

    Args:
        results: ``{type, filterKey, data, definitionVersion, validUntilMs?}`` objects.

    Returns:
        ``{filterKey, definitionVersion, results: [{type, data, dataHash, validUntilMs?}]}`` objects.

    Raises:
        ValueError: results of one filter set disagree on ``definitionVersion``.
    """
    sets: dict[str, dict[str, Any]] = {}
    for result in results:
        key = str(result["filterKey"])
        version = result["definitionVersion"]
        entry = sets.get(key)
        if entry is None:
            entry = {"filterKey": key, "definitionVersion": version, "results": []}
            sets[key] = entry
        elif entry["definitionVersion"] != version:
            raise ValueError(f"filter set {key!r} mixes definitionVersion {entry['definitionVersion']} and {version}")
        text = canonical_json(result["data"])
        item: dict[str, Any] = {
            "type": result["type"],
            "data": RawJson(text),  # serialised once: hashed here, embedded verbatim in the request
            "dataHash": _hash_text(text),
        }
        if result.get("validUntilMs") is not None:
            item["validUntilMs"] = result["validUntilMs"]
        entry["results"].append(item)
    return list(sets.values())


def pack_result_sets(sets: Iterable[dict[str, Any]], chunk_size: int) -> list[list[dict[str, Any]]]:
    """Pack whole sets, in order, into batches of at most ``chunk_size`` results.

    A set is never split; one larger than ``chunk_size`` forms a batch of its own.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    count = 0
    for entry in sets:
        size = len(entry["results"])
        if current and count + size > chunk_size:
            batches.append(current)
            current, count = [], 0
        current.append(entry)
        count += size
    if current:
        batches.append(current)
    return batches


_RAW_MARK = re.compile(r'"\\u0000raw([0-9a-f]{16}):(\d+)\\u0000"')


def _encode_body(path: str, args: Mapping[str, Any]) -> bytes:
    """Encode a function call body; :class:`RawJson` values are embedded verbatim.

    Arguments holding :class:`RawJson` are plain JSON by construction (aggregate data: strings,
    finite numbers, booleans, null, lists, objects with string keys), so they skip the Convex value
    encoder, whose per-value Python walk dominated the cost of large stores; everything else is
    encoded with ``convex.values.convex_to_json``.
    """
    raws: list[str] = []
    nonce = secrets.token_hex(8)  # placeholders cannot collide with text inside the arguments

    def lift(value: Any) -> Any:
        if isinstance(value, RawJson):
            raws.append(str(value))
            return f"\x00raw{nonce}:{len(raws) - 1}\x00"
        if isinstance(value, dict):
            return {k: lift(v) for k, v in value.items()}
        if isinstance(value, list):
            return [lift(v) for v in value]
        return value

    lifted = lift(dict(args))
    body = {"path": path, "args": convex_to_json(lifted), "format": "convex_encoded_json"}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if raws:
        text = _RAW_MARK.sub(lambda m: raws[int(m.group(2))] if m.group(1) == nonce else m.group(0), text)
    return text.encode("utf-8")


def _strip_known(result_set: dict[str, Any], known: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """Copy of a set whose results with a known stored hash carry no ``data``."""
    key = result_set["filterKey"]
    results = [
        {k: v for k, v in r.items() if k != "data"} if known.get((key, r["type"])) == r["dataHash"] else r
        for r in result_set["results"]
    ]
    return {**result_set, "results": results}


class Gateway(Protocol):
    """What the runner needs from Convex; :class:`ConvexGateway` is the real implementation."""

    async def validate_credentials(self) -> None: ...

    async def pending_changes(self, limit: int) -> list[ChangeEntry]: ...

    async def claim_user(self, user_id: str, worker_id: str, lease_ms: int) -> Claim: ...

    async def renew_lease(self, user_id: str, worker_id: str, lease_ms: int) -> LeaseRenewal: ...

    def iter_event_pages(
        self,
        user_id: str,
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        max_change_seq: int | None = None,
        page_size: int = 4000,
    ) -> AsyncIterator[list[WatchEvent]]: ...

    def iter_changed_event_pages(
        self, user_id: str, *, after_seq: int, through_seq: int, page_size: int = 4000
    ) -> AsyncIterator[list[WatchEvent]]: ...

    async def store_aggregations(
        self,
        user_id: str,
        *,
        watermark: int,
        computed_at_ms: int,
        results: Sequence[Mapping[str, Any]],
        chunk_size: int,
        known_hashes: Mapping[tuple[str, str], str] | None = None,
    ) -> StoreOutcome: ...

    async def ack_changes(self, user_id: str, worker_id: str, up_to_seq: int) -> AckOutcome: ...

    async def fail_changes(self, user_id: str, worker_id: str, up_to_seq: int, error: str) -> FailOutcome: ...

    async def enqueue_expired(self, now_ms: int) -> ExpiryOutcome: ...

    def subscribe_pending(self, limit: int) -> AsyncIterator[list[ChangeEntry]]: ...


def _header_secret(what: str, secret: str | None) -> str | None:
    """Return ``secret`` without surrounding whitespace, or raise ConfigError naming what is wrong, never its value."""
    if not secret:
        return secret
    try:
        return clean_secret(secret)
    except ValueError as exc:
        raise ConfigError(f"the {what} is invalid: {exc}") from None


_NOT_A_DEPLOYMENT_STATUS: Final = frozenset({501, 505})
"""5xx statuses that no retry can change (Not Implemented, HTTP Version Not Supported): a server at
the URL that is not a Convex deployment, refused at once rather than retried as "not up yet"."""


class ConvexGateway:
    """Client of one Convex deployment for the worker, the importer and the demo.

    Args:
        url: Deployment URL (``https://…convex.cloud`` or ``http://127.0.0.1:3210``).
        admin_key: Admin/deploy key; required for internal functions (the worker).
        user_token: A user's JWT; public functions then act as that user.
        timeout_s: Timeout of one HTTP call, seconds.
        max_attempts: Attempts per call for transient failures.
        max_backoff_s: Longest wait between two attempts, seconds.

    Raises:
        ConfigError: the admin key or token holds whitespace or a control character inside (it goes
            into an HTTP header, where httpx would refuse it on every call quoting the header, key
            included); surrounding whitespace is dropped (:func:`worker.config.clean_secret`).
    """

    def __init__(
        self,
        url: str,
        *,
        admin_key: str | None = None,
        user_token: str | None = None,
        timeout_s: float = 30.0,
        max_attempts: int = 5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        admin_key, user_token = _header_secret("admin key", admin_key), _header_secret("token", user_token)
        self._admin_key = admin_key
        self._user_token = user_token
        headers = {"Convex-Client": "python-watch-worker-0.1.0"}
        if admin_key:
            headers["Authorization"] = f"Convex {admin_key}"
        elif user_token:
            headers["Authorization"] = f"Bearer {user_token}"
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
        )
        self._max_attempts = max_attempts
        self._max_backoff_s = max_backoff_s
        self._ws_client: ConvexClient | None = None

    async def __aenter__(self) -> ConvexGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool (the WebSocket client closes with the process)."""
        await self._http.aclose()

    # ------------------------------------------------------------------ generic calls

    @contextlib.contextmanager
    def _unexpected(self, path: str, raw: Any) -> Iterator[None]:
        """Turn a failure to read ``path``'s result ``raw`` (a field missing or of another type) into one
        :class:`PermanentGatewayError`: the URL answers as Convex but is not this project's deployment
        (or runs other versions of its functions)."""
        try:
            yield
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise PermanentGatewayError(
                f"{path}: unexpected result {_excerpt(repr(raw))} ({type(exc).__name__}: {exc}); does {self.url}"
                " run this project's functions (npx convex deploy from convex/)?",
                function=path,
            ) from exc

    async def call(self, kind: FunctionKind, path: str, args: Mapping[str, Any] | None = None) -> Any:
        """Run one Convex function over HTTP, retrying transient failures.

        Args:
            kind: ``query``, ``mutation`` or ``action``.
            path: Function path, ``"module:export"``.
            args: Argument object (Python values; ints are sent as float64).

        Returns:
            The function's return value, decoded (numbers come back as ``float``).

        Raises:
            AuthenticationError: the deployment rejected the credentials (HTTP 401).
            PermanentGatewayError: the function threw (``code``/``data`` carry a ConvexError's data),
                does not exist, or the request was rejected (4xx).
            TransientGatewayError: still failing after ``max_attempts`` (timeouts, 5xx but 501 and 505, connection).
        """

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("gateway.retry", function=path, attempt=state.attempt_number, error=str(exc))

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientGatewayError),
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential_jitter(multiplier=0.1, max=self._max_backoff_s, jitter=0.1),
            reraise=True,
            before_sleep=before_sleep,
        )
        async for attempt in retrying:
            with attempt:
                return await self._call_once(kind, path, args or {})
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_once(self, kind: FunctionKind, path: str, args: Mapping[str, Any]) -> Any:
        return await self._post(kind, path, _encode_body(path, args))

    async def _post(self, kind: FunctionKind, path: str, content: bytes) -> Any:
        try:
            response = await self._http.post(
                f"/api/{kind}", content=content, headers={"Content-Type": "application/json"}
            )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise TransientGatewayError(f"{path}: {type(exc).__name__}: {exc}", function=path) from exc
        if response.status_code in _NOT_A_DEPLOYMENT_STATUS:
            raise PermanentGatewayError(
                f"{path}: HTTP {response.status_code} {_excerpt(response.text)}: the server does not implement"
                f" Convex's HTTP API; is {self.url} a Convex deployment?",
                function=path,
            )
        if response.status_code >= 500:
            raise TransientGatewayError(f"{path}: HTTP {response.status_code} {_excerpt(response.text)}", function=path)
        try:
            payload = response.json()
        except ValueError as exc:
            raise PermanentGatewayError(
                f"{path}: HTTP {response.status_code}, not JSON: {_excerpt(response.text)}", function=path
            ) from exc
        if not isinstance(payload, dict) or (response.status_code < 400 and "status" not in payload):
            raise PermanentGatewayError(
                f"{path}: HTTP {response.status_code} with JSON that is not a Convex function result:"
                f" {_excerpt(response.text)}; is {self.url} a Convex deployment?",
                function=path,
            )
        if response.status_code == 401:
            reason = f"{payload.get('code')}: {payload.get('message')}"
            raise AuthenticationError(
                f"{self.url} rejected the {'admin key' if self._admin_key else 'token'}: {reason}",
                function=path,
                code=payload.get("code"),
                url=self.url,
                reason=reason,
            )
        if response.status_code >= 400:
            raise PermanentGatewayError(
                f"{path}: HTTP {response.status_code} {payload.get('code')}: {payload.get('message')}",
                function=path,
                code=payload.get("code"),
            )
        if payload.get("status") == "success":
            with self._unexpected(path, payload.get("value")):
                return json_to_convex(payload["value"])
        message = str(payload.get("errorMessage", "unknown error"))
        data: Any = json_to_convex(payload["errorData"]) if "errorData" in payload else None
        code = str(data["code"]) if isinstance(data, dict) and "code" in data else None
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            message = f"{code}: {data['message']}" if code else data["message"]  # the function's own words
        raise PermanentGatewayError(f"{path}: {message}", function=path, code=code, data=data)

    async def query(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        """Run a query; see :meth:`call`."""
        return await self.call("query", path, args)

    async def mutation(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        """Run a mutation; see :meth:`call`. Only call idempotent mutations from the worker."""
        return await self.call("mutation", path, args)

    # ------------------------------------------------------------------ worker API

    async def validate_credentials(self) -> None:
        """Check at start-up that the deployment answers and accepts the admin key (one attempt).

        The WebSocket client never reports a rejected key (it reconnects forever), so this one HTTP
        call is what makes bad credentials fail fast. It is not retried here: the runner retries a
        deployment that cannot be reached yet (:meth:`~worker.runner.Runner.connect`).

        Raises:
            AuthenticationError: the key was rejected.
            TransientGatewayError: the deployment cannot be reached (timeout, connection refused, 5xx).
            PermanentGatewayError: the deployment does not have this project's functions (or answers
                with values they do not return), or the URL answers something other than a Convex
                deployment.
        """
        # a Convex reply, but not of these functions, is refused here too
        self._pending_rows(await self._call_once("query", "worker:pendingChanges", {"limit": 1}))

    async def pending_changes(self, limit: int) -> list[ChangeEntry]:
        """Return up to ``limit`` pending change-log rows (``worker:pendingChanges``)."""
        return self._pending_rows(await self.query("worker:pendingChanges", {"limit": limit}))

    def _pending_rows(self, rows: Any) -> list[ChangeEntry]:
        """Read the value of ``worker:pendingChanges`` (a call or a subscription update)."""
        with self._unexpected("worker:pendingChanges", rows):
            return [change_from_convex(row) for row in rows]

    async def claim_user(self, user_id: str, worker_id: str, lease_ms: int) -> Claim:
        """Take or renew the user's lease and read its pending changes (``worker:claimUser``)."""
        raw = await self.mutation("worker:claimUser", {"userId": user_id, "workerId": worker_id, "leaseMs": lease_ms})
        with self._unexpected("worker:claimUser", raw):
            return self._claim(raw, user_id)

    @staticmethod
    def _claim(raw: Any, user_id: str) -> Claim:
        return Claim(
            granted=bool(raw["granted"]),
            lease_owner=raw.get("leaseOwner"),
            lease_expires_at_ms=_opt_int(raw.get("leaseExpiresAtMs")),
            time_zone=str(raw.get("timeZone") or "UTC"),
            last_seq=int(raw.get("lastSeq", 0)),
            changes=tuple(change_from_convex(c, user_id) for c in raw.get("changes", [])),
            interests=tuple(raw.get("interests", [])),
            appended=_appended_from_convex(raw.get("appended")),
            retry_after_ms=_opt_int(raw.get("retryAfterMs")),
            user_created_at_ms=None if raw.get("userCreatedAtMs") is None else float(raw["userCreatedAtMs"]),
        )

    async def renew_lease(self, user_id: str, worker_id: str, lease_ms: int) -> LeaseRenewal:
        """Extend the user's lease to ``lease_ms`` from now if this worker still holds it (``worker:renewLease``).

        Called periodically while the user is recomputed; it reads nothing else and changes nothing
        when the lease is not this worker's any more (see :class:`~worker.models.LeaseRenewal`).
        """
        raw = await self.mutation("worker:renewLease", {"userId": user_id, "workerId": worker_id, "leaseMs": lease_ms})
        with self._unexpected("worker:renewLease", raw):
            return LeaseRenewal(
                renewed=bool(raw["renewed"]),
                lease_owner=raw.get("leaseOwner"),
                lease_expires_at_ms=_opt_int(raw.get("leaseExpiresAtMs")),
            )

    async def iter_event_pages(
        self,
        user_id: str,
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        max_change_seq: int | None = None,
        page_size: int = 4000,
    ) -> AsyncIterator[list[WatchEvent]]:
        """Yield the user's events in ``watchedAtMs`` order, one page at a time.

        Args:
            user_id: The user.
            from_ms: Inclusive lower bound on ``watchedAtMs`` (epoch ms UTC), None = unbounded.
            to_ms: Inclusive upper bound, None = unbounded.
            max_change_seq: Leave out events inserted by a change with a higher seq (None = keep
                all); pages may then be shorter than ``page_size``.
            page_size: Events per ``worker:listEvents`` call.
        """
        args: dict[str, Any] = {"userId": user_id}
        if from_ms is not None:
            args["fromMs"] = from_ms
        if to_ms is not None:
            args["toMs"] = to_ms
        if max_change_seq is not None:
            args["maxChangeSeq"] = max_change_seq
        async for page in self._pages("worker:listEvents", args, page_size):
            yield page

    async def iter_changed_event_pages(
        self, user_id: str, *, after_seq: int, through_seq: int, page_size: int = 4000
    ) -> AsyncIterator[list[WatchEvent]]:
        """Yield the events inserted by the user's changes with ``after_seq < seq <= through_seq``.

        The delta of appends since a cached state (``worker:listEventsByChange``): events in change
        order, not time order; events deleted since are not returned.

        Args:
            user_id: The user.
            after_seq: Exclusive lower bound on the inserting change's seq.
            through_seq: Inclusive upper bound.
            page_size: Events per call.
        """
        args: dict[str, Any] = {"userId": user_id, "afterSeq": after_seq, "throughSeq": through_seq}
        async for page in self._pages("worker:listEventsByChange", args, page_size):
            yield page

    async def _pages(self, function: str, args: dict[str, Any], page_size: int) -> AsyncIterator[list[WatchEvent]]:
        cursor: str | None = None
        while True:
            page = await self.query(function, {**args, "paginationOpts": {"numItems": page_size, "cursor": cursor}})
            with self._unexpected(function, page):
                events = [event_from_convex(doc) for doc in page["page"]]
                done, cursor = bool(page["isDone"]), page["continueCursor"]
            yield events
            if done:
                return

    async def store_aggregations(
        self,
        user_id: str,
        *,
        watermark: int,
        computed_at_ms: int,
        results: Sequence[Mapping[str, Any]],
        chunk_size: int = 50,
        known_hashes: Mapping[tuple[str, str], str] | None = None,
    ) -> StoreOutcome:
        """Write aggregation results under the write guard, one whole filter set per transaction.

        The results are grouped by ``filterKey`` into sets (each stored atomically by
        ``worker:storeAggregations``, so a reader never sees two computations mixed within a set),
        each result gets a ``dataHash`` (see :func:`data_hash`) so the backend rewrites only rows
        whose data changed, and whole sets are packed into calls of at most ``chunk_size`` results
        (a set larger than ``chunk_size`` is sent alone). A result whose hash equals
        ``known_hashes[(filterKey, type)]`` is sent without its data; if the backend's stored hash
        differs after all (another replica wrote, or the memo is stale) it refuses that set as
        ``missing`` and the set is sent again with all its data.

        Args:
            user_id: The user.
            watermark: Highest change seq the results reflect.
            computed_at_ms: When they were computed, epoch ms UTC.
            results: ``{type, filterKey, data, definitionVersion, validUntilMs?}`` objects.
            chunk_size: Most results per ``worker:storeAggregations`` call (the backend allows 50).
            known_hashes: ``(filterKey, type) → dataHash`` believed stored (a previous outcome's
                ``hashes``); None uploads every result's data.

        Returns:
            Written / unchanged / stale-skipped counts summed over the calls, the number of sets
            re-sent, and the hashes now stored.

        Raises:
            ValueError: results of one filter set disagree on ``definitionVersion``.
        """
        sets = group_result_sets(results)
        full = {s["filterKey"]: s for s in sets}
        outgoing = [_strip_known(s, known_hashes) for s in sets] if known_hashes else sets
        outcome, missing = await self._store_sets(user_id, watermark, computed_at_ms, outgoing, chunk_size)
        if missing:
            resend = [full[key] for key in missing]
            retry, _ = await self._store_sets(user_id, watermark, computed_at_ms, resend, chunk_size)
            outcome = outcome + StoreOutcome(resent=len(resend)) + retry
        return outcome

    async def _store_sets(
        self, user_id: str, watermark: int, computed_at_ms: int, sets: list[dict[str, Any]], chunk_size: int
    ) -> tuple[StoreOutcome, list[str]]:
        """Send the sets in packed calls; return the summed outcome and the filter keys refused as missing."""
        outcome = StoreOutcome()
        missing: list[str] = []
        for batch in pack_result_sets(sets, chunk_size):
            raw = await self.mutation(
                "worker:storeAggregations",
                {"userId": user_id, "watermark": watermark, "computedAtMs": computed_at_ms, "sets": batch},
            )
            with self._unexpected("worker:storeAggregations", raw):
                refused = set(raw.get("missing", []))
                stored = StoreOutcome(int(raw["written"]), int(raw["unchanged"]), int(raw["skippedStale"]))
            missing.extend(refused)
            accepted = {
                (s["filterKey"], r["type"]): r["dataHash"]
                for s in batch
                if s["filterKey"] not in refused
                for r in s["results"]
            }
            outcome = outcome + replace(stored, hashes=accepted)
        return outcome, missing

    async def ack_changes(self, user_id: str, worker_id: str, up_to_seq: int) -> AckOutcome:
        """Mark the user's pending rows with ``seq ≤ up_to_seq`` done and release the lease.

        Call it only after storing results computed at watermark ``up_to_seq``: when it acknowledges a
        pending row, the user's dead letters with ``seq ≤ up_to_seq`` are marked done as well.

        Returns:
            The rows acknowledged and the dead letters superseded (0 from a deployment that does not
            report them).
        """
        raw = await self.mutation("worker:ackChanges", {"userId": user_id, "workerId": worker_id, "upToSeq": up_to_seq})
        with self._unexpected("worker:ackChanges", raw):
            return AckOutcome(acked=int(raw["acked"]), superseded=int(raw.get("superseded", 0)))

    async def fail_changes(self, user_id: str, worker_id: str, up_to_seq: int, error: str) -> FailOutcome:
        """Record a failed attempt on the user's pending rows with ``seq ≤ up_to_seq``.

        A row is dead-lettered at its fifth failed attempt. While failed rows stay pending the
        deployment keeps the user's lease as a backoff (1, 4, 16, 64 s after the first to the fourth
        failure) that no replica, this one included, can claim before it ends.

        Returns:
            The rows updated, those dead-lettered now and the backoff set, ms (counts a deployment
            does not report are 0).
        """
        raw = await self.mutation(
            "worker:failChanges",
            {"userId": user_id, "workerId": worker_id, "upToSeq": up_to_seq, "error": error[:2000]},
        )
        with self._unexpected("worker:failChanges", raw):
            return FailOutcome(
                failed=int(raw["failed"]),
                dead_lettered=int(raw.get("deadLettered", 0)),
                backoff_ms=int(raw.get("backoffMs", 0)),
            )

    async def enqueue_expired(self, now_ms: int) -> ExpiryOutcome:
        """Append ``expiry`` changes for users whose time-relative results expired at ``now_ms``.

        The same call retires on-demand filter sets whose results and interest expired, and deletes a
        bounded batch of other expired interests. A backend deployed before those counts existed
        answers without them: they are read as 0.
        """
        raw = await self.mutation("worker:enqueueExpired", {"nowMs": now_ms})
        with self._unexpected("worker:enqueueExpired", raw):
            return ExpiryOutcome(
                enqueued=int(raw["enqueued"]),
                retired=int(raw.get("retired", 0)),
                removed_interests=int(raw.get("removedInterests", 0)),
            )

    async def subscribe_pending(self, limit: int) -> AsyncIterator[list[ChangeEntry]]:
        """Yield the pending change rows whenever they change (WebSocket subscription).

        Consecutive identical values (the client repeats values after reconnects) are dropped.

        Raises:
            PermanentGatewayError: the query failed with a ConvexError.
        """
        if self._ws_client is None:
            client = ConvexClient(self.url)
            if self._admin_key:
                client.set_admin_auth(self._admin_key)
            elif self._user_token:
                client.set_auth(self._user_token)
            self._ws_client = client
        subscription = self._ws_client.subscribe("worker:pendingChanges", {"limit": limit})
        previous: Any = object()
        try:
            while True:
                try:
                    value: Any = await subscription.__anext__()
                except ConvexError as exc:
                    raise PermanentGatewayError(
                        f"worker:pendingChanges subscription failed: {exc}", function="worker:pendingChanges"
                    ) from exc
                if value == previous:
                    continue
                previous = value
                yield self._pending_rows(value)
        finally:
            # Not unsubscribed here: the client's unsubscribe() blocks (holding the GIL) while the
            # deployment is unreachable, which would turn a SIGTERM during an outage into a hang.
            # The subscription ends with the client (one per gateway, closed with the process).
            del subscription

    # ------------------------------------------------------------------ user/operator API

    async def import_batch(
        self, events: Iterable[WatchEvent], *, source: str, user_id: str | None = None
    ) -> dict[str, Any]:
        """Import one batch (≤ 1000 events) as the token's user, or as ``user_id`` with the admin key.

        Returns:
            ``{inserted, duplicates, seq}`` as returned by the backend.
        """
        docs = [event_to_convex(e, source) for e in events]
        path = "admin:importBatch" if user_id is not None else "watchEvents:importBatch"
        args: dict[str, Any] = {"userId": user_id, "events": docs} if user_id is not None else {"events": docs}
        raw = await self.mutation(path, args)
        with self._unexpected(path, raw):
            return dict(raw)

    async def list_dead_letters(self, *, user_id: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Return dead-lettered changes, by user then seq (``admin:listDeadLetters``, admin key).

        Args:
            user_id: Only this user's; None = every user's.
            limit: Most rows returned (1–1000).

        Raises:
            PermanentGatewayError: a bad ``limit`` or ``user_id`` (code ``INVALID_ARGUMENT``), the key
                was rejected (:class:`AuthenticationError`), or the deployment lacks the function.
            TransientGatewayError: the deployment could not be reached.
        """
        rows = await self.query("admin:listDeadLetters", _limit_args(limit, user_id))
        with self._unexpected("admin:listDeadLetters", rows):
            return [
                DeadLetter(
                    change=change_from_convex(row),
                    attempts=int(row["attempts"]),
                    error=str(row.get("error", "")),
                    created_at_ms=int(row["createdAtMs"]),
                    failed_at_ms=_opt_int(row.get("failedAtMs")),
                )
                for row in rows
            ]

    async def retry_dead_letters(self, *, user_id: str | None = None, limit: int = 1000) -> tuple[int, bool]:
        """Put up to ``limit`` dead letters back to pending with attempts reset (``admin:retryDeadLetters``).

        Args:
            user_id: Only this user's; None = every user's.
            limit: Most rows per call (1–4000).

        Returns:
            ``(retried, has_more)``: rows put back, and whether more dead letters match (call again).

        Raises:
            PermanentGatewayError: as :meth:`list_dead_letters`.
            TransientGatewayError: the deployment could not be reached.
        """
        raw = await self.mutation("admin:retryDeadLetters", _limit_args(limit, user_id))
        with self._unexpected("admin:retryDeadLetters", raw):
            return int(raw["retried"]), bool(raw["hasMore"])

    async def request_recompute(self, user_id: str) -> int:
        """Ask for a recompute of a user's whole history (``admin:requestRecompute``, the manual trigger).

        Appends a ``"manual"`` change for ``user_id`` to the change log; a running worker picks it up
        like any change. Each call appends one.

        Returns:
            The seq of the appended change.

        Raises:
            PermanentGatewayError: the deployment refused the arguments (a malformed user id).
            AuthenticationError: the admin key was rejected.
            TransientGatewayError: the deployment could not be reached.
        """
        raw = await self.mutation("admin:requestRecompute", {"userId": user_id})
        with self._unexpected("admin:requestRecompute", raw):
            return int(raw["seq"])

    async def dashboard(self, filters: Mapping[str, Any] | None = None) -> Any:
        """Read the token user's dashboard (public ``dashboard:getDashboard``)."""
        return await self.query("dashboard:getDashboard", {"filters": dict(filters)} if filters else {})
