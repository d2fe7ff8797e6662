# Watch-history aggregation worker. Build: docker build -t watch-worker .
# Run:   docker run -e CONVEX_URL=https://<deployment>.convex.cloud -e CONVEX_ADMIN_KEY=... watch-worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WORKER_HEARTBEAT_FILE=/tmp/watch-worker.heartbeat \
    WORKER_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/install.sh
COPY worker/ worker/
# The same install script CI uses, in its runtime-only mode (no dev dependencies, no Node).
RUN scripts/install.sh --prod \
    && useradd --system --uid 10001 --no-create-home worker

USER 10001
# Healthy while the event loop touches its heartbeat file: at least every 15 s, also during a long
# recompute of one user; 90 s is six touches missed before the worker counts as dead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "worker", "healthcheck", "--max-age-s", "90"]
# No MALLOC_* variables needed: `run` bounds glibc malloc itself at start-up (WORKER_MALLOC_ARENA_MAX,
# WORKER_MALLOC_MMAP_THRESHOLD_BYTES; worker/allocator.py).
# Exec form: the worker is PID 1 and gets SIGTERM directly; it finishes the current user and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "worker"]
CMD ["run"]
