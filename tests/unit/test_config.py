"""Settings: environment names, defaults, and the error that names a missing variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker.config import (
    KEY_VARIABLES,
    MAX_LEASE_MS,
    MAX_WORKER_ID_LENGTH,
    URL_VARIABLES,
    Settings,
    check_deployment_url,
    conflicting_spellings,
    load_settings,
    setting_variables,
    unknown_variables,
)
from worker.errors import ConfigError

CONVEX_WORKER = Path(__file__).resolve().parents[2] / "convex" / "worker.ts"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CONVEX_URL",
        "CONVEX_SELF_HOSTED_URL",
        "CONVEX_ADMIN_KEY",
        "CONVEX_SELF_HOSTED_ADMIN_KEY",
        "CONVEX_DEPLOY_KEY",
        "WORKER_CONVEX_URL",
        "WORKER_CONVEX_ADMIN_KEY",
        "WORKER_LEASE_MS",
        "WORKER_LOG_FORMAT",
        "WORKER_REDIS_URL",
        "WORKER_PAGE_SIZE",
        "WORKER_LOG_LEVEL",
        "WORKER_WORKER_ID",
        *(f"WORKER_{name.upper()}" for name in FLOAT_SETTINGS),
    ):
        monkeypatch.delenv(name, raising=False)


FLOAT_SETTINGS = tuple(name for name, info in Settings.model_fields.items() if info.annotation is float)
"""Every real-number setting (each must be finite)."""


def deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the two required variables to a local deployment."""
    monkeypatch.setenv("CONVEX_URL", "http://127.0.0.1:3210")
    monkeypatch.setenv("CONVEX_ADMIN_KEY", "k")


class TestLoadSettings:
    def test_missing_url_and_key_are_named(self) -> None:
        """Both missing variables are named in one error."""
        with pytest.raises(ConfigError) as err:
            load_settings()
        message = str(err.value)
        assert message.startswith("CONVEX_URL is not set; CONVEX_ADMIN_KEY")
        assert "WORKER_CONVEX" not in message

    def test_standard_convex_names(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The self-hosted variable names are accepted and the key stays secret in repr."""
        monkeypatch.setenv("CONVEX_SELF_HOSTED_URL", "http://127.0.0.1:3210")
        monkeypatch.setenv("CONVEX_SELF_HOSTED_ADMIN_KEY", "secret-key-123")
        settings = load_settings()
        assert str(settings.convex_url).startswith("http://127.0.0.1:3210")
        assert settings.convex_admin_key.get_secret_value() == "secret-key-123"
        assert "secret-key-123" not in repr(settings)

    def test_worker_prefix_and_bounds(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """WORKER_* knobs are read and validated; an invalid value names its variable."""
        monkeypatch.setenv("CONVEX_URL", "https://happy-otter-123.convex.cloud")
        monkeypatch.setenv("CONVEX_ADMIN_KEY", "k")
        monkeypatch.setenv("WORKER_LEASE_MS", "5000")
        assert load_settings().lease_ms == 5000
        monkeypatch.setenv("WORKER_LEASE_MS", "-1")
        with pytest.raises(ConfigError, match="WORKER_LEASE_MS is invalid"):
            load_settings()

    def test_bad_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A URL that is not http(s) is rejected with the variable's name."""
        monkeypatch.setenv("CONVEX_URL", "not a url")
        monkeypatch.setenv("CONVEX_ADMIN_KEY", "k")
        with pytest.raises(ConfigError, match="^CONVEX_URL is invalid"):
            load_settings()

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:3210/api", "http://127.0.0.1:3210/api/", "https://h.example/x/api"]
    )
    def test_url_with_api_path_is_refused_with_the_base_url(self, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
        """A deployment URL ending in /api would make every call go to /api/api/...: refused, naming the base URL."""
        monkeypatch.setenv("CONVEX_URL", url)
        monkeypatch.setenv("CONVEX_ADMIN_KEY", "k")
        base = url[: url.rstrip("/").rfind("/api")]
        message = f"CONVEX_URL is invalid: the deployment URL must not include /api (use {base})"
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            load_settings()
        with pytest.raises(ConfigError, match=f"^{re.escape(message.replace('CONVEX_URL', '--url'))}$"):
            check_deployment_url(url, source="--url")
        assert check_deployment_url("http://127.0.0.1:3210/apis") == "http://127.0.0.1:3210/apis"

    def test_lower_case_variable_is_named_as_spelt(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Names are read case-insensitively; an invalid value is reported under the name as it is set."""
        deployment(monkeypatch)
        monkeypatch.setenv("worker_lease_ms", "abc")
        with pytest.raises(ConfigError, match="^worker_lease_ms is invalid"):
            load_settings()
        monkeypatch.setenv("worker_lease_ms", "5000")
        assert load_settings().lease_ms == 5000

    def test_empty_variables_do_not_hide_their_aliases(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An empty CONVEX_URL/CONVEX_ADMIN_KEY (docker-compose style) counts as unset: the next name is used."""
        monkeypatch.setenv("CONVEX_URL", "")
        monkeypatch.setenv("CONVEX_SELF_HOSTED_URL", "http://127.0.0.1:3210")
        monkeypatch.setenv("CONVEX_ADMIN_KEY", "")
        monkeypatch.setenv("CONVEX_DEPLOY_KEY", "deploy-key")
        settings = load_settings()
        assert str(settings.convex_url).startswith("http://127.0.0.1:3210")
        assert settings.convex_admin_key.get_secret_value() == "deploy-key"

    @pytest.mark.parametrize(
        ("variable", "value", "message"),
        [
            ("WORKER_REDIS_URL", "nonsense", "WORKER_REDIS_URL is invalid: expected a redis://"),
            ("WORKER_PAGE_SIZE", "8000", "WORKER_PAGE_SIZE is invalid"),  # the backend serves ≤ 4000 per page
        ],
    )
    def test_values_the_backend_or_redis_would_refuse_are_refused_at_start(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
    ) -> None:
        deployment(monkeypatch)
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
            load_settings()
        monkeypatch.setenv("WORKER_REDIS_URL", "redis://127.0.0.1:6379/0")
        monkeypatch.setenv("WORKER_PAGE_SIZE", "4000")
        assert load_settings().page_size == 4000

    def test_log_level_and_format_are_case_insensitive(self, monkeypatch: pytest.MonkeyPatch) -> None:
        deployment(monkeypatch)
        monkeypatch.setenv("WORKER_LOG_LEVEL", "DEBUG")
        monkeypatch.setenv("WORKER_LOG_FORMAT", "Json")
        settings = load_settings()
        assert (settings.log_level, settings.log_format) == ("debug", "json")
        monkeypatch.setenv("WORKER_LOG_LEVEL", "verbose")
        with pytest.raises(ConfigError, match="^WORKER_LOG_LEVEL is invalid"):
            load_settings()


class TestWorkerId:
    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("   ", "only whitespace"),
            ("rep\nA", "character 4 is a control character (U+000A)"),
            ("rep\tA", "character 4 is a control character (U+0009)"),
        ],
    )
    def test_blank_or_control_characters_are_refused(
        self, monkeypatch: pytest.MonkeyPatch, value: str, reason: str
    ) -> None:
        """An id that prints as nothing, or breaks a log line, names no replica: refused at start-up."""
        monkeypatch.setenv("CONVEX_URL", "https://happy-otter-123.convex.cloud")
        monkeypatch.setenv("CONVEX_ADMIN_KEY", "k")
        monkeypatch.setenv("WORKER_WORKER_ID", value)
        with pytest.raises(ConfigError, match=f"WORKER_WORKER_ID is invalid: {re.escape(reason)}"):
            load_settings()

    def test_spaces_inside_are_kept(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CONVEX_URL", "https://happy-otter-123.convex.cloud")
        monkeypatch.setenv("CONVEX_ADMIN_KEY", "k")
        monkeypatch.setenv("WORKER_WORKER_ID", "replica A")
        assert load_settings().worker_id == "replica A"


class TestBackendBounds:
    """Settings the deployment checks at every call are checked at start-up, against the same bounds."""

    @pytest.mark.parametrize(
        ("name", "python"), [("MAX_LEASE_MS", MAX_LEASE_MS), ("MAX_WORKER_ID_LENGTH", MAX_WORKER_ID_LENGTH)]
    )
    def test_bounds_equal_the_convex_ones(self, name: str, python: int) -> None:
        """The bounds are the ones convex/worker.ts enforces (``60 * 60 * 1000`` is read as the product it is)."""
        source = CONVEX_WORKER.read_text(encoding="utf-8")
        match = re.search(rf"^export const {name} = ([0-9_ *]+);", source, flags=re.MULTILINE)
        assert match is not None, f"{name} not found in {CONVEX_WORKER} as a number or a product of numbers"
        value = 1
        for factor in match.group(1).split("*"):
            value *= int(factor.strip().replace("_", ""))
        assert python == value, f"{name}: worker/config.py and convex/worker.ts differ"

    @pytest.mark.parametrize(
        ("variable", "value", "message"),
        [
            (
                "WORKER_LEASE_MS",
                "3600001",
                "WORKER_LEASE_MS is invalid: must be 1-3600000 ms (the deployment grants leases of 1 ms to 1 h),"
                " got 3600001",
            ),
            (
                "WORKER_LEASE_MS",
                "0",
                "WORKER_LEASE_MS is invalid: must be 1-3600000 ms (the deployment grants leases of 1 ms to 1 h), got 0",
            ),
            (
                "WORKER_WORKER_ID",
                "",
                "WORKER_WORKER_ID is invalid: an empty id names no replica: set 1-256 characters, or unset it for"
                " the default <host>-<pid>",
            ),
            ("WORKER_WORKER_ID", "w" * 300, "WORKER_WORKER_ID is invalid: must be 1-256 characters, got 300"),
            # JavaScript counts a character outside the BMP twice, as the deployment does: 129 of them are 258
            ("WORKER_WORKER_ID", "\U0001f600" * 129, "WORKER_WORKER_ID is invalid: must be 1-256 characters, got 258"),
        ],
    )
    def test_values_the_deployment_would_refuse_at_every_claim_are_refused_at_start(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
    ) -> None:
        deployment(monkeypatch)
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            load_settings()

    def test_the_bounds_themselves_are_accepted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        deployment(monkeypatch)
        for lease in ("1", "3600000"):
            monkeypatch.setenv("WORKER_LEASE_MS", lease)
            assert load_settings().lease_ms == int(lease)
        for worker_id in ("w", "w" * 256, "\U0001f600" * 128):
            monkeypatch.setenv("WORKER_WORKER_ID", worker_id)
            assert load_settings().worker_id == worker_id

    @pytest.mark.parametrize("name", FLOAT_SETTINGS)
    @pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e400", "nan", " NaN "])
    def test_non_finite_numbers_are_refused(self, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
        """An infinite poll interval or timeout would never fire, and nan is no duration at all."""
        deployment(monkeypatch)
        variable = f"WORKER_{name.upper()}"
        monkeypatch.setenv(variable, value)
        with pytest.raises(
            ConfigError, match=f"^{re.escape(f'{variable} is invalid: Input should be a finite number')}$"
        ):
            load_settings()
        monkeypatch.setenv(variable, "2.5")
        assert getattr(load_settings(), name) == 2.5
        monkeypatch.setenv(variable, "soon")
        with pytest.raises(ConfigError, match=f"^{variable} is invalid: Input should be a valid number"):
            load_settings()


class TestConflictingSpellings:
    def test_two_spellings_with_different_values_are_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """WORKER_PAGE_SIZE and worker_page_size with different values: which one wins would depend on the
        environment's order, so load_settings names both instead of picking one."""
        deployment(monkeypatch)
        monkeypatch.setenv("WORKER_PAGE_SIZE", "500")
        monkeypatch.setenv("worker_page_size", "800")
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert str(err.value) == (
            "WORKER_PAGE_SIZE and worker_page_size are both set, to different values (names are read"
            " case-insensitively): keep one"
        )

    def test_same_value_or_one_spelling_is_accepted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Spellings agreeing on the value, and unrelated variables, are no conflict."""
        env = {"WORKER_PAGE_SIZE": "500", "Worker_Page_Size": "500", "WORKER_LEASE_MS": "1", "other": "x"}
        assert conflicting_spellings(env) == []
        deployment(monkeypatch)
        monkeypatch.setenv("WORKER_PAGE_SIZE", "500")
        monkeypatch.setenv("worker_page_size", "500")
        assert load_settings().page_size == 500

    def test_three_spellings_are_all_named(self) -> None:
        """Every spelling of the setting is named, in name order."""
        env = {"WORKER_LEASE_MS": "1", "worker_lease_ms": "2", "Worker_Lease_Ms": "2"}
        (message,) = conflicting_spellings(env)
        assert message.startswith("WORKER_LEASE_MS, Worker_Lease_Ms and worker_lease_ms are all set")


class TestAdminKey:
    KEY = "convex-local|dev-secret"

    @pytest.mark.parametrize("around", ["\n", "\r\n", " ", "\t", "\r\n\r\n"])
    def test_surrounding_whitespace_is_dropped(self, monkeypatch: pytest.MonkeyPatch, around: str) -> None:
        """A key read with $(cat keyfile) from a file with Windows line endings, or pasted with a newline, works."""
        monkeypatch.setenv("CONVEX_URL", "http://127.0.0.1:3210")
        monkeypatch.setenv("CONVEX_ADMIN_KEY", f"{around}{self.KEY}{around}")
        assert load_settings().convex_admin_key.get_secret_value() == self.KEY
        assert load_settings(convex_admin_key=self.KEY + around).convex_admin_key.get_secret_value() == self.KEY

    @pytest.mark.parametrize(
        ("key", "variable", "message"),
        [
            ("convex-local|dev\nsecret", "CONVEX_ADMIN_KEY", "character 17 of 23 is a line feed (U+000A)"),
            ("\nconvex-local|dev\rsecret\n", "CONVEX_DEPLOY_KEY", "character 18 of 25 is a carriage return (U+000D)"),
            ("convex-local|dev secret", "CONVEX_SELF_HOSTED_ADMIN_KEY", "character 17 of 23 is a space (U+0020)"),
            ("convex-local|dev\x7fsecret", "CONVEX_ADMIN_KEY", "character 17 of 23 is a control character (U+007F)"),
            ("convex-local|dév-secret", "CONVEX_ADMIN_KEY", "character 15 of 23 is not ASCII"),
        ],
    )
    def test_inner_whitespace_or_control_character_is_refused_without_the_key(
        self, monkeypatch: pytest.MonkeyPatch, key: str, variable: str, message: str
    ) -> None:
        """The error names the variable, the position and the kind of the character, and never shows the key."""
        monkeypatch.setenv("CONVEX_URL", "http://127.0.0.1:3210")
        monkeypatch.setenv(variable, key)
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert str(err.value).startswith(f"{variable} is invalid: {message}"), str(err.value)
        assert "secret" not in str(err.value) and "convex-local" not in str(err.value)
        assert "\n" not in str(err.value)

    def test_given_key_is_checked_too(self) -> None:
        """A key passed directly (as the demo passes its backend's) is held to the same rule."""
        with pytest.raises(ConfigError, match="is invalid: character 4 of 7 is a NUL \\(U\\+0000\\)") as err:
            load_settings(convex_url="http://127.0.0.1:3210", convex_admin_key="abc\x00def")
        assert "abc" not in str(err.value)

    def test_description_documents_the_rule(self) -> None:
        """The setting's description says what is trimmed and what is refused."""
        description = Settings.model_fields["convex_admin_key"].description or ""
        assert "Leading and trailing ASCII whitespace is ignored" in description
        assert "control character inside the key is refused" in description

    def test_empty_key_without_an_alias_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """CONVEX_ADMIN_KEY= (or only whitespace) and no other key variable: "set but empty", not an empty key."""
        monkeypatch.setenv("CONVEX_URL", "http://127.0.0.1:3210")
        for blank in ("", " ", "\r\n"):
            monkeypatch.setenv("CONVEX_ADMIN_KEY", blank)
            with pytest.raises(ConfigError, match="^CONVEX_ADMIN_KEY is set but empty$"):
                load_settings()
        monkeypatch.setenv("CONVEX_URL", "")
        monkeypatch.setenv("CONVEX_DEPLOY_KEY", "")
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert str(err.value) == "CONVEX_URL is set but empty; CONVEX_ADMIN_KEY is set but empty"

    def test_empty_override_is_refused(self) -> None:
        """An empty key given directly (the demo's backend key) is refused too."""
        with pytest.raises(ConfigError, match="CONVEX_ADMIN_KEY .* is invalid: is empty"):
            load_settings(convex_url="http://127.0.0.1:3210", convex_admin_key="")


class TestAliases:
    @pytest.mark.parametrize(
        ("first", "second", "meaning"),
        [
            ("CONVEX_URL", "CONVEX_SELF_HOSTED_URL", "the deployment URL"),
            ("CONVEX_URL", "WORKER_CONVEX_URL", "the deployment URL"),
            ("CONVEX_ADMIN_KEY", "CONVEX_DEPLOY_KEY", "the admin key"),
            ("CONVEX_SELF_HOSTED_ADMIN_KEY", "CONVEX_DEPLOY_KEY", "the admin key"),
            ("CONVEX_ADMIN_KEY", "WORKER_CONVEX_ADMIN_KEY", "the admin key"),
        ],
    )
    def test_aliases_with_different_values_are_refused_naming_both(
        self, monkeypatch: pytest.MonkeyPatch, first: str, second: str, meaning: str
    ) -> None:
        """Two names of the deployment URL or of the key disagreeing: refused, naming both, showing neither value."""
        monkeypatch.setenv("CONVEX_ADMIN_KEY" if "URL" in first else "CONVEX_URL", "http://127.0.0.1:3210")
        monkeypatch.setenv(first, "http://127.0.0.1:1" if "URL" in first else "key-one")
        monkeypatch.setenv(second, "http://127.0.0.1:2" if "URL" in second else "key-two")
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert str(err.value) == (
            f"{first} and {second} are both set, to different values (both are read as {meaning}): keep one"
        )

    def test_same_value_empty_alias_or_given_value_is_no_conflict(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Aliases agreeing (up to surrounding whitespace or a URL's final /), a blank alias, or an override pass."""
        monkeypatch.setenv("CONVEX_URL", "http://127.0.0.1:3210")
        monkeypatch.setenv("CONVEX_SELF_HOSTED_URL", "http://127.0.0.1:3210/")
        monkeypatch.setenv("CONVEX_ADMIN_KEY", "k\r\n")
        monkeypatch.setenv("CONVEX_DEPLOY_KEY", "k")
        monkeypatch.setenv("CONVEX_SELF_HOSTED_ADMIN_KEY", "")
        assert load_settings().convex_admin_key.get_secret_value() == "k"
        monkeypatch.setenv("CONVEX_DEPLOY_KEY", "other")
        monkeypatch.setenv("CONVEX_SELF_HOSTED_URL", "http://127.0.0.1:9")
        settings = load_settings(convex_url="http://127.0.0.1:5", convex_admin_key="given")  # the demo's way
        assert settings.convex_admin_key.get_secret_value() == "given"

    def test_three_names_and_case_spellings(self) -> None:
        """Every disagreeing name is listed in reading order; spellings of one name keep their own wording."""
        env = {"CONVEX_DEPLOY_KEY": "c", "CONVEX_ADMIN_KEY": "a", "CONVEX_SELF_HOSTED_ADMIN_KEY": "b"}
        assert conflicting_spellings(env) == [
            "CONVEX_ADMIN_KEY, CONVEX_SELF_HOSTED_ADMIN_KEY and CONVEX_DEPLOY_KEY are all set, to different values"
            " (all are read as the admin key): keep one"
        ]
        env = {"CONVEX_URL": "http://a:1", "convex_url": "http://b:1"}
        assert conflicting_spellings(env) == [
            "CONVEX_URL and convex_url are both set, to different values (names are read case-insensitively): keep one"
        ]


class TestUnknownVariables:
    @pytest.mark.parametrize(
        ("name", "suggestion"),
        [
            ("WORKER_PAGESIZE", "WORKER_PAGE_SIZE"),
            ("WORKER_LOGLEVEL", "WORKER_LOG_LEVEL"),
            ("WORKER_POLL_INTERVAL", "WORKER_POLL_INTERVAL_S"),
            ("worker_redis", "WORKER_REDIS_URL"),
            ("worker_pagesize", "WORKER_PAGE_SIZE"),
            ("Worker_Batchsize", "WORKER_BATCH_SIZE"),
            ("WORKER_ID", "WORKER_WORKER_ID"),
            ("WORKER_CONVEX_DEPLOY_KEY", "CONVEX_DEPLOY_KEY"),
            ("WORKER_THREADS", None),
        ],
    )
    def test_unknown_name_with_the_closest_setting(self, name: str, suggestion: str | None) -> None:
        """A WORKER_* name that is no setting is reported with the closest setting variable, if any is close."""
        assert unknown_variables({name: "1", "PATH": "/bin"}) == [(name, suggestion)]

    def test_settings_and_other_variables_are_not_reported(self) -> None:
        """Every setting variable (any case, WORKER_CONVEX_URL included) and non-WORKER names pass."""
        environ = {name: "1" for name in setting_variables()}
        environ |= {"worker_page_size": "1", "WORKER_CONVEX_URL": "x", "HOME": "/root", "MY_WORKER_X": "1"}
        assert unknown_variables(environ) == []

    def test_each_name_once_in_order_from_the_process_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The process environment is read by default; each unknown name is reported once, sorted."""
        monkeypatch.setenv("WORKER_ZZZ_TYPO", "1")
        monkeypatch.setenv("WORKER_BATCHSIZE", "10")
        found = [item for item in unknown_variables() if item[0] in ("WORKER_ZZZ_TYPO", "WORKER_BATCHSIZE")]
        assert found == [("WORKER_BATCHSIZE", "WORKER_BATCH_SIZE"), ("WORKER_ZZZ_TYPO", None)]

    def test_ignored_by_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unknown name does not make loading fail (it is only warned about)."""
        deployment(monkeypatch)
        monkeypatch.setenv("WORKER_PAGESIZE", "10")
        assert load_settings().page_size == 4000


class TestReadmeSettingsTable:
    def test_every_setting_is_documented_with_its_default(self) -> None:
        """README's settings table names every Settings field (its environment variable) with the default in code."""
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
        rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+?) \|", readme, flags=re.MULTILINE))
        for name, info in Settings.model_fields.items():
            variable = {"convex_url": URL_VARIABLES[0], "convex_admin_key": KEY_VARIABLES[0]}.get(
                name, f"WORKER_{name.upper()}"
            )
            assert variable in rows, f"{variable} is missing from README's settings table"
            documented = rows[variable].strip()
            if info.is_required() or info.default_factory is not None:
                continue  # required, or computed at start-up (worker id): the table describes it in words
            default = info.default
            if default is None:
                assert documented == "unset", (variable, documented)
            elif isinstance(default, bool | str):
                assert documented == str(default), (variable, documented)
            else:
                assert float(documented) == float(default), (variable, documented, default)
