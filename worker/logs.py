"""Structured logging set-up (structlog): JSON lines off a TTY, a console renderer on one."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal, TextIO

import structlog


def configure_logging(
    log_format: Literal["auto", "json", "console"] = "auto", level: str = "info", *, stream: TextIO | None = None
) -> None:
    """Configure structlog for the process.

    Args:
        log_format: ``json`` (one JSON object per line), ``console`` (human-readable) or ``auto``
            (console when ``stream`` is a TTY, JSON otherwise). Console lines are coloured only on
            a TTY and when ``NO_COLOR`` is unset or empty.
        level: Minimum level name (``debug``, ``info``, ``warning``, ``error``).
        stream: Where the lines go: stdout (the default: ``run``, whose logs are its output) or
            stderr (the commands whose stdout is their result: ``import``, ``dead-letters``, ``demo``).
    """
    out = sys.stdout if stream is None else stream
    tty = out.isatty()
    use_console = log_format == "console" or (log_format == "auto" and tty)
    # colours only on a terminal (not in a file or a pipe) and unless NO_COLOR is set (no-color.org)
    colors = tty and not os.environ.get("NO_COLOR")
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=colors) if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
