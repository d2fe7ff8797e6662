"""The local Convex-compatible backend against the real Python clients.

Uses the fixture functions in ``convex-local/test/fixture/convex`` (``fixture_backend``), plus
private backends for restart/persistence tests. Every test uses its own channel name, so tests
sharing the session backend do not see each other's data.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from convex import ConvexClient, ConvexError
from convex.http_client import ConvexHttpClient

from tests.support.backend import FIXTURE_FUNCTIONS_DIR, LocalBackend
from tests.support.rawws import RawWebSocket

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def channel() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(fixture_backend: LocalBackend) -> Iterator[ConvexClient]:
    yield ConvexClient(fixture_backend.url)


def post(backend: LocalBackend, route: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{backend.url}{route}", json=body, headers=headers or {}, timeout=30)


class TestConvexClient:
    def test_mutation_then_query(self, client: ConvexClient) -> None:
        """A mutation's write is visible to the next query."""
        ch = channel()
        doc_id = client.mutation("messages:send", {"channel": ch, "author": "a", "body": "hello"})
        assert isinstance(doc_id, str) and doc_id.endswith("messages")
        assert client.query("messages:list", {"channel": ch}) == [{"author": "a", "body": "hello"}]
        assert client.query("messages:count", {"channel": ch}) == 1.0

    def test_subscription_gets_other_clients_mutation(self, fixture_backend: LocalBackend) -> None:
        """A subscriber receives the initial value, then the value after another client's mutation."""
        ch = channel()
        subscriber = ConvexClient(fixture_backend.url)
        writer = ConvexClient(fixture_backend.url)

        async def scenario() -> tuple[list[object], float]:
            sub = subscriber.subscribe("messages:count", {"channel": ch})
            first = await asyncio.wait_for(sub.__anext__(), 10)
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            mutation = loop.run_in_executor(
                None, lambda: writer.mutation("messages:send", {"channel": ch, "author": "w", "body": "x"})
            )
            values = [first]
            while True:
                value = await asyncio.wait_for(sub.__anext__(), 10)
                if value != values[-1]:
                    values.append(value)
                    break
            latency_ms = (time.perf_counter() - t0) * 1000
            await mutation
            sub.unsubscribe()
            return values, latency_ms

        values, latency_ms = asyncio.run(scenario())
        print(f"subscription update latency after another client's mutation: {latency_ms:.1f} ms")
        assert values == [0.0, 1.0]
        assert latency_ms < 2000, "update arrived, but far slower than the 100 ms target"

    def test_internal_function_needs_admin_key(self, fixture_backend: LocalBackend, client: ConvexClient) -> None:
        """Internal functions look missing without the admin key and work with it."""
        ch = channel()
        with pytest.raises(Exception, match=r"Could not find public function for 'messages:internalList'"):
            client.query("messages:internalList", {"channel": ch})
        admin = ConvexClient(fixture_backend.url)
        admin.set_admin_auth(fixture_backend.admin_key)
        admin.mutation("messages:internalAdd", {"channel": ch, "body": "secret"})
        assert admin.query("messages:internalList", {"channel": ch}) == ["secret"]
        assert admin.action("actions:secret") == "internal action result"

    def test_convex_error_data_and_rollback(self, client: ConvexClient) -> None:
        """ConvexError data reaches the caller and the failed mutation's write is rolled back."""
        ch = channel()
        with pytest.raises(ConvexError) as info:
            client.mutation("messages:sendThenFail", {"channel": ch})
        assert info.value.data == {"code": "ROLLED_BACK", "detail": 42.0}
        assert client.query("messages:count", {"channel": ch}) == 0.0

    def test_action_runs_mutation(self, client: ConvexClient) -> None:
        """An action's inner mutation commits and its inner query sees it."""
        ch = channel()
        assert client.action("actions:sendViaAction", {"channel": ch, "body": "b"}) == 1.0

    def test_query_error_message(self, client: ConvexClient) -> None:
        """A thrown Error surfaces with the Server Error message shape."""
        with pytest.raises(Exception, match=r"Server Error\nUncaught Error: boom from query"):
            client.query("messages:boom")

    def test_user_identity_via_set_auth(self, fixture_backend: LocalBackend, client: ConvexClient) -> None:
        """A minted token gives ctx.auth an identity with tokenIdentifier `convex-local|<subject>`."""
        client.set_auth(fixture_backend.mint_token("user-42"))
        who = client.query("messages:whoami")
        assert who == {"tokenIdentifier": "convex-local|user-42", "subject": "user-42", "issuer": "convex-local"}
        ch = channel()
        assert client.mutation("messages:sendAsMe", {"channel": ch, "body": "mine"}) == "convex-local|user-42"
        client.clear_auth()
        assert client.query("messages:whoami") is None


class TestHttpClient:
    def test_legacy_client_query_mutation_errors(self, fixture_backend: LocalBackend) -> None:
        """The legacy ConvexHttpClient parses values (floats with .0), errors and ConvexError data."""
        http = ConvexHttpClient(fixture_backend.url)
        ch = channel()
        http.mutation("messages:send", {"channel": ch, "author": "h", "body": "via http"})
        assert http.query("messages:count", {"channel": ch}) == 1.0
        assert http.query("messages:echo", {"value": {"n": 25, "xs": [1, 2.5]}}) == {"n": 25.0, "xs": [1.0, 2.5]}
        with pytest.raises(ConvexError) as info:
            http.mutation("messages:sendThenFail", {"channel": ch})
        assert info.value.data == {"code": "ROLLED_BACK", "detail": 42.0}
        with pytest.raises(Exception, match="Could not find public function"):
            http.query("messages:internalList", {"channel": ch})
        http.set_admin_auth(fixture_backend.admin_key)
        assert http.query("messages:internalList", {"channel": ch}) == ["via http"]

    def test_bearer_token_and_forged_token(self, fixture_backend: LocalBackend) -> None:
        """A valid JWT authenticates over HTTP; forged, expired and unknown-issuer tokens get 401."""
        token = fixture_backend.mint_token("alice")
        ok = post(
            fixture_backend, "/api/query", {"path": "messages:whoami", "args": {}}, {"Authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 200
        assert ok.json()["value"]["tokenIdentifier"] == "convex-local|alice"
        header, payload, signature = token.split(".")
        claims = json.loads(_b64url_decode(payload))
        claims["sub"] = "mallory"
        forged = f"{header}.{_b64url_encode(json.dumps(claims).encode())}.{signature}"
        bad = post(
            fixture_backend,
            "/api/mutation",
            {"path": "messages:sendAsMe", "args": {"channel": "f", "body": "x"}},
            {"Authorization": f"Bearer {forged}"},
        )
        assert bad.status_code == 401
        assert bad.json()["code"] == "InvalidAuthHeader"
        expired = fixture_backend.mint_token("bob", ttl_seconds=1)
        time.sleep(2.1)
        assert (
            post(
                fixture_backend,
                "/api/query",
                {"path": "messages:whoami", "args": {}},
                {"Authorization": f"Bearer {expired}"},
            ).status_code
            == 401
        )
        wrong_admin = post(
            fixture_backend,
            "/api/query",
            {"path": "messages:whoami", "args": {}},
            {"Authorization": "Convex not-the-key"},
        )
        assert wrong_admin.status_code == 401
        assert wrong_admin.json()["code"] == "BadAdminKey"
        # Nothing ran with the forged token.
        assert (
            post(fixture_backend, "/api/query", {"path": "messages:count", "args": {"channel": "f"}}).json()["value"]
            == 0
        )

    def test_run_and_function_routes_and_formats(self, fixture_backend: LocalBackend) -> None:
        """/api/run and /api/function run any function type; format selects the output encoding."""
        ch = channel()
        r = post(fixture_backend, "/api/run/messages/send", {"args": {"channel": ch, "author": "r", "body": "b"}})
        assert r.status_code == 200 and r.json()["status"] == "success"
        r = post(
            fixture_backend,
            "/api/function",
            {"path": "messages:count", "args": {"channel": ch}, "format": "convex_encoded_json"},
        )
        assert r.text.startswith('{"status":"success","value":1.0')
        r = post(fixture_backend, "/api/query", {"path": "messages:count", "args": {"channel": ch}, "format": "xml"})
        assert r.status_code == 400 and r.json()["code"] == "BadFormat"
        ts = post(fixture_backend, "/api/query_ts", {}).json()["ts"]
        r = post(fixture_backend, "/api/query_at_ts", {"path": "messages:count", "args": {"channel": ch}, "ts": ts})
        assert r.json()["value"] == 1
        r = httpx.get(
            f"{fixture_backend.url}/api/query", params={"path": "messages:count", "args": json.dumps({"channel": ch})}
        )
        assert r.json()["value"] == 1

    def test_http_action_on_site_port(self, fixture_backend: LocalBackend) -> None:
        """HTTP actions from http.ts are served on the site port."""
        assert fixture_backend.site_url is not None
        r = httpx.get(f"{fixture_backend.site_url}/hello", params={"channel": channel()})
        assert r.status_code == 200 and r.json() == {"hello": "world", "count": 0}


class TestBadInput:
    def test_malformed_ws_message_gets_fatal_error_and_server_keeps_serving(
        self, fixture_backend: LocalBackend, client: ConvexClient
    ) -> None:
        """Garbage on a socket gets FatalError on that socket only."""
        ws = RawWebSocket(fixture_backend.url)
        ws.send_text("{not json")
        msg = ws.recv_json()
        assert msg["type"] == "FatalError" and "not JSON" in msg["error"]
        ws.close()
        ws = RawWebSocket(fixture_backend.url, "/api/1.48.0/sync")
        ws.send_json({"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0, "lastCloseReason": None})
        ws.send_json({"type": "ModifyQuerySet", "baseVersion": 5, "newVersion": 6, "modifications": []})
        msg = ws.recv_json()
        assert msg["type"] == "FatalError" and "baseVersion" in msg["error"]
        ws.close()
        assert client.query("messages:count", {"channel": channel()}) == 0.0

    def test_unknown_function_wrong_types_oversized_args(self, fixture_backend: LocalBackend) -> None:
        """Bad calls fail as function errors naming the problem; the backend keeps serving."""
        http = ConvexHttpClient(fixture_backend.url)
        with pytest.raises(Exception, match=r"Could not find public function for 'nope:missing'"):
            http.query("nope:missing")
        with pytest.raises(Exception, match=r"Trying to execute messages:send as Query, but it is defined as Mutation"):
            http.query("messages:send", {"channel": "x", "author": "a", "body": "b"})
        with pytest.raises(Exception, match=r"Validator error"):
            http.query("messages:count", {"channel": 5})
        with pytest.raises(Exception, match=r"8192"):
            http.query("messages:echo", {"value": list(range(9000))})
        big = "x" * (17 * 1024 * 1024)
        r = post(fixture_backend, "/api/query", {"path": "messages:echo", "args": {"value": big}})
        assert r.status_code == 413
        r = post(
            fixture_backend, "/api/query", {"path": "messages:echo", "args": {"value": "x" * (16 * 1024 * 1024 - 10)}}
        )
        assert r.json()["status"] == "error" and "too large" in r.json()["errorMessage"]
        r = post(fixture_backend, "/api/query", {"path": "messages:echo", "args": {"$bad": 1}})
        assert r.json()["status"] == "error" and "must not start with '$'" in r.json()["errorMessage"]
        r = httpx.post(f"{fixture_backend.url}/api/query", content=b"{oops", timeout=10)
        assert r.status_code == 400 and r.json()["code"] == "BadJsonBody"
        with pytest.raises(Exception, match=r"array at \$\.payload has 9000 elements"):
            http.mutation("messages:badDocument", {"size": 9000})
        assert http.query("messages:count", {"channel": "x"}) == 0.0

    def test_log_lines_are_capped(self, fixture_backend: LocalBackend) -> None:
        """At most 256 log lines per execution, the last one saying lines were dropped."""
        r = post(fixture_backend, "/api/query", {"path": "messages:logSome", "args": {"n": 300}}).json()
        assert len(r["logLines"]) == 256
        assert r["logLines"][0] == "[LOG] 'line' 0"
        assert "Log overflow" in r["logLines"][-1]

    def test_runaway_query_is_stopped_without_blocking_others(self, fixture_backend: LocalBackend) -> None:
        """A query past the time limit fails with a timeout error; the backend then serves others."""
        http = ConvexHttpClient(fixture_backend.url)
        ch = channel()
        http.mutation("messages:send", {"channel": ch, "author": "a", "body": "kept"})
        with pytest.raises(Exception, match="timed out"):
            http.query("slow:spin")
        with pytest.raises(Exception, match="timed out"):
            http.mutation("slow:spinMutation", {"channel": ch})
        assert http.query("messages:list", {"channel": ch}) == [{"author": "a", "body": "kept"}]


class TestDurability:
    def test_data_survives_sigkill_and_clients_reconnect(self, tmp_path: Path) -> None:
        """With --data-dir, committed data survives SIGKILL; a connected client resumes its subscription."""
        backend = LocalBackend(FIXTURE_FUNCTIONS_DIR, data_dir=tmp_path / "data")
        backend.start()
        try:
            ch = channel()
            client = ConvexClient(backend.url)
            first_id = client.mutation("messages:send", {"channel": ch, "author": "a", "body": "1"})
            client.mutation("messages:send", {"channel": ch, "author": "a", "body": "2"})

            async def scenario() -> list[object]:
                sub = client.subscribe("messages:count", {"channel": ch})
                seen = [await asyncio.wait_for(sub.__anext__(), 10)]
                backend.restart(hard=True)
                writer = ConvexHttpClient(backend.url)
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: writer.mutation("messages:send", {"channel": ch, "author": "b", "body": "3"})
                )
                while seen[-1] != 3.0:
                    seen.append(await asyncio.wait_for(sub.__anext__(), 30))
                sub.unsubscribe()
                return seen

            seen = asyncio.run(scenario())
            assert seen[0] == 2.0 and seen[-1] == 3.0
            assert client.query("messages:list", {"channel": ch})[:2] == [
                {"author": "a", "body": "1"},
                {"author": "a", "body": "2"},
            ]
            backend.restart()
            http = ConvexHttpClient(backend.url)
            http.set_admin_auth(backend.admin_key)
            assert http.query("messages:internalList", {"channel": ch}) == ["1", "2", "3"]
            # Ids are stable across restarts and new ids do not collide with old ones.
            new_id = http.mutation("messages:send", {"channel": ch, "author": "c", "body": "4"})
            assert new_id != first_id
            token_before = backend.mint_token("same-user")
            backend.restart()
            ok = post(
                backend,
                "/api/query",
                {"path": "messages:whoami", "args": {}},
                {"Authorization": f"Bearer {token_before}"},
            )
            assert ok.status_code == 200, "signing key must persist in the data dir"
        finally:
            backend.kill()


def _b64url_decode(s: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _b64url_encode(b: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TestFanOut:
    def test_identical_subscriptions_are_evaluated_once_per_commit(self) -> None:
        """Two sockets subscribed to the same query and args cost one evaluation per commit."""
        backend = LocalBackend(FIXTURE_FUNCTIONS_DIR)
        backend.start()
        try:
            ch = channel()
            a, b = ConvexClient(backend.url), ConvexClient(backend.url)
            writer = ConvexHttpClient(backend.url)

            def evaluations() -> int:
                r = httpx.get(f"{backend.url}/_local/stats", headers={"Authorization": f"Convex {backend.admin_key}"})
                return int(r.json()["queryEvaluations"])

            async def scenario() -> int:
                sub_a = a.subscribe("messages:count", {"channel": ch})
                sub_b = b.subscribe("messages:count", {"channel": ch})
                assert await asyncio.wait_for(sub_a.__anext__(), 10) == 0.0
                assert await asyncio.wait_for(sub_b.__anext__(), 10) == 0.0
                before = evaluations()
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: writer.mutation("messages:send", {"channel": ch, "author": "w", "body": "x"})
                )
                assert await asyncio.wait_for(sub_a.__anext__(), 10) == 1.0
                assert await asyncio.wait_for(sub_b.__anext__(), 10) == 1.0
                return evaluations() - before

            assert asyncio.run(scenario()) == 1
        finally:
            backend.kill()


class TestProjectBackend:
    def test_project_functions_load_and_answer(self, project_backend: LocalBackend) -> None:
        """The project's own convex/ functions load; a public and an internal function answer."""
        http = ConvexHttpClient(project_backend.url)
        assert http.query("settings:get") is None
        http.set_admin_auth(project_backend.admin_key)
        assert isinstance(http.query("worker:pendingChanges", {}), list)
