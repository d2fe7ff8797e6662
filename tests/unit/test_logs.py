"""Log lines of the worker's commands (worker.logs)."""

from __future__ import annotations

import io

import pytest
import structlog

from worker.logs import configure_logging


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    yield
    structlog.reset_defaults()


def _line(stream: io.StringIO, log_format: str) -> str:
    configure_logging(log_format, "info", stream=stream)  # type: ignore[arg-type]
    structlog.get_logger("t").warning("cache.l2_error", error="down")
    return stream.getvalue()


def test_console_lines_in_a_file_or_pipe_have_no_colour_codes() -> None:
    """demo ... 2> file: readable text, not ANSI escapes."""
    line = _line(io.StringIO(), "console")
    assert "cache.l2_error" in line and "\x1b[" not in line


def test_console_lines_on_a_terminal_are_coloured_unless_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" in _line(_Terminal(), "console")
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in _line(_Terminal(), "console")


def test_auto_is_json_off_a_terminal() -> None:
    assert _line(io.StringIO(), "auto").startswith('{"error": "down", "event": "cache.l2_error"')
