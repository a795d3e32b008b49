"""Logs and metrics, set up the same way in every process.

Logs: structlog, with the stdlib `logging` calls of the rest of the code (and of uvicorn,
psycopg, temporalio) rendered by the same processors, so every line carries the ids bound
with `structlog.contextvars` (office_id, session_id, job_id, command_id, workflow_id...):
the API binds them per request (`RequestContext`), the command executor per command, and the
workers per activity (`ContextInterceptor`). JSON lines when stderr is not a terminal (what
`semo dev` writes to `.semo/logs/`), coloured console lines when it is.

Metrics, Prometheus:

- the API serves `GET /metrics` from its own registry (`ApiMetrics`): requests by route and
  status, attached terminals, and gauges read from Postgres when scraped (sessions by status,
  running jobs, open commands). It is unauthenticated, as scrape targets usually are, and
  carries no ids (no office, session or user names): only counts.
- the workers serve the Temporal SDK's runtime metrics (`temporal_*`: polls, task latencies,
  slots, RPCs) on `--metrics-address`, and app metrics through the same runtime's meter:
  what a workflow decides (jobs by outcome, restarts, circuit opens) is counted in the
  workflow with `workflow.metric_meter()`, which the SDK does not record while replaying,
  so a history replayed on another worker does not count again; what the client worker sees
  (output bytes read from terminals, live terminals) is counted where it reads them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import uuid
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the API)
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = structlog.get_logger(__name__)

# --- logs -----------------------------------------------------------------------------------

_QUIET = {"temporalio": logging.WARNING, "httpx": logging.WARNING, "httpcore": logging.WARNING,
          "uvicorn.access": logging.WARNING, "psycopg.pool": logging.WARNING,
          "websockets": logging.WARNING}


def configure_logging(component: str, *, level: int = logging.INFO, json: bool | None = None,
                      stream=None) -> None:
    """Route structlog and stdlib logging through one renderer, with bound ids merged in.

    `json=None` picks JSON lines unless `stream` (stderr) is a terminal.
    """
    stream = stream or sys.stderr
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())

    def add_component(_, __, event: dict) -> dict:
        event.setdefault("component", component)
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_component,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(
        colors=hasattr(stream, "isatty") and stream.isatty())
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared[:-1],
                    structlog.processors.StackInfoRenderer(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info if json else _keep, renderer],  # type: ignore[list-item]
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, lvl in _QUIET.items():
        logging.getLogger(name).setLevel(lvl)


def _keep(_, __, event: dict) -> dict:
    return event


#: ids worth binding, as they appear in paths, activity inputs and workflow ids
ID_KEYS = ("office_id", "session_id", "job_id", "command_id")

_PATH_IDS = re.compile(
    r"^/api/offices/(?P<office_id>[^/]+)"
    r"(?:/(?:sessions/(?P<session_id>[^/]+)|jobs/(?P<job_id>[^/]+)|commands/(?P<command_id>[^/]+)))?")
_SESSION_WF = re.compile(r"^session/(?P<office_id>[^/]+)/(?P<session_id>[^/]+)$")
_POOL_WF = re.compile(r"^pool/(?P<office_id>[^/]+)$")


def ids_from_path(path: str) -> dict[str, str]:
    m = _PATH_IDS.match(path)
    return {k: v for k, v in m.groupdict().items() if v} if m else {}


def ids_from_workflow_id(workflow_id: str | None) -> dict[str, str]:
    for pattern in (_SESSION_WF, _POOL_WF):
        m = pattern.match(workflow_id or "")
        if m:
            return m.groupdict()
    return {}


def ids_from(obj: Any) -> dict[str, str]:
    """The ids an activity input or command carries (pydantic models, dataclasses, dicts)."""
    found = {}
    for key in ID_KEYS:
        value = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
        if isinstance(value, (str, uuid.UUID)) and value:
            found[key] = str(value)
    return found


# --- Temporal: ids on activity log lines, runtime metrics ----------------------------------

try:  # the worker side only; the CLI imports this module without needing temporalio
    from temporalio import activity as _activity
    from temporalio.worker import (
        ActivityInboundInterceptor,
        ExecuteActivityInput,
        Interceptor,
    )

    class _ActivityContext(ActivityInboundInterceptor):
        async def execute_activity(self, input: ExecuteActivityInput) -> Any:
            info = _activity.info()
            ids = ids_from_workflow_id(info.workflow_id)
            for arg in input.args[:1]:
                ids.update(ids_from(arg))
            with structlog.contextvars.bound_contextvars(
                    activity=info.activity_type, workflow_id=info.workflow_id,
                    attempt=info.attempt, **ids):
                return await self.next.execute_activity(input)

    class ContextInterceptor(Interceptor):
        """Binds the workflow id, activity and the ids in its input on every log line an
        activity writes (workflow code logs through `workflow.logger`, which adds its own)."""

        def intercept_activity(
                self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
            return _ActivityContext(next)
except ImportError:  # pragma: no cover
    ContextInterceptor = None  # type: ignore[assignment,misc]


def install_worker_runtime(component: str, metrics_address: str | None) -> bool:
    """Make the default Temporal runtime export Prometheus metrics on `metrics_address`
    (`host:port`). Call before the process connects to Temporal. A port that cannot be bound
    is logged, not fatal: the worker runs without metrics rather than not at all."""
    if not metrics_address:
        return False
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    try:
        runtime = Runtime(telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=metrics_address),
            global_tags={"component": component}))
    except ValueError as err:
        log.warning("metrics disabled: cannot serve them", address=metrics_address, error=str(err))
        return False
    Runtime.set_default(runtime, error_if_already_set=False)
    log.info("metrics served", url=f"http://{metrics_address}/metrics")
    return True


def meter_of(client) -> Any:
    """The metric meter of the runtime a Temporal client (and so its workers) uses."""
    from temporalio.runtime import Runtime

    runtime = getattr(client.service_client.config, "runtime", None) or Runtime.default()
    return runtime.metric_meter


class OutputCounter:
    """An OutputSink wrapper counting the bytes read from terminals, once each: `append` is
    called once per read (retried database writes do not pass through here again)."""

    def __init__(self, sink, meter) -> None:
        self._sink = sink
        self._bytes = meter.create_counter(
            "semo_output_bytes_total", "bytes read from session terminals on this machine", "By")

    def append(self, session_id: str, start_offset: int, data: bytes) -> None:
        self._bytes.add(len(data))
        self._sink.append(session_id, start_offset, data)

    def __getattr__(self, name: str):  # pending, flush, forget, start, close
        return getattr(self._sink, name)


async def report_terminals(manager, meter, interval_s: float = 2.0) -> None:
    """Keep `semo_terminals_live` (this machine's running agent terminals) current."""
    gauge = meter.create_gauge("semo_terminals_live", "agent terminals running on this machine")
    while True:
        gauge.set(sum(1 for t in list(manager.terminals.values()) if t.alive))
        await asyncio.sleep(interval_s)


# --- the API ---------------------------------------------------------------------------------


class ApiMetrics:
    """The API's metrics, in a registry of its own (one per app, so that tests can build
    several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("semo_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("semo_http_request_duration_seconds",
                                 "time to answer an HTTP request (streams: until they end)",
                                 ["method", "route"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.attached = Gauge("semo_attached_terminals", "WebSocket attach connections open",
                              registry=r)
        self.attach_input = Counter("semo_attach_input_bytes", "bytes typed through attach",
                                    registry=r)
        self.sessions = Gauge("semo_sessions", "sessions by status (from Postgres)", ["status"],
                              registry=r)
        self.jobs_running = Gauge("semo_jobs_running", "jobs not finished (from Postgres)",
                                  registry=r)
        self.commands_open = Gauge("semo_commands_open",
                                   "agent_commands rows pending or running (from Postgres)",
                                   ["status"], registry=r)
        self.scrape_errors = Counter("semo_metrics_scrape_errors",
                                     "scrapes whose Postgres gauges could not be read", registry=r)

    def set_counts(self, counts: dict | None) -> None:
        """The gauges that live in Postgres (db/reads.py `fleet_counts`); None: they could not
        be read (a scrape still answers, with what the process knows)."""
        if counts is None:
            self.scrape_errors.inc()
            return
        for status in ("starting", "ready", "busy", "waiting_input", "restarting", "failed"):
            self.sessions.labels(status).set(counts["sessions"].get(status, 0))
        self.jobs_running.set(counts["jobs_running"])
        for status in ("pending", "running"):
            self.commands_open.labels(status).set(counts["commands"].get(status, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestContext:
    """ASGI middleware: binds a request id and the ids in the path for every log line of the
    request, and counts it (by route template, so ids never become label values)."""

    def __init__(self, app, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=uuid.uuid4().hex[:16], method=scope.get("method", "WS"),
            path=scope["path"], **ids_from_path(scope["path"]))
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        status = 500
        started = time.monotonic()

        async def send_and_see(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.monotonic() - started)

