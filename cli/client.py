"""A small HTTP client for the semo API, for the CLI and for scripts.

Every call has a timeout. Answers are the API's JSON (dicts, shaped as SPEC §4 says); errors
are the exception tree below, so a caller can tell "the API said no" from "the API is not
there" from "it took too long" without looking at httpx.

Where the API is and which token to use: `resolve_config` looks at explicit values (flags),
then `SEMO_API_URL` / `SEMO_TOKEN`, then the `.semo/dev.json` that `semo dev` writes
(`$SEMO_HOME/dev.json`, or `.semo/dev.json` in this directory or a parent).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from semo.errors import ConfigError

DEFAULT_API_URL = "http://127.0.0.1:8000"

#: seconds: connecting, reading a plain answer, and waiting for a command's answer (the API
#: answers 504 itself after its command timeout, 30 s by default)
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 120.0
#: a live stream must show a sign of life (an event or the 15 s ping) this often
STREAM_IDLE_TIMEOUT_S = 45.0


# --- errors ------------------------------------------------------------------------------------


class SemoClientError(Exception):
    """Base of everything this client raises."""

    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None,
                 problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.problem = problem or {}

    @property
    def command_id(self) -> str | None:
        return self.problem.get("command_id")


class ApiRefused(SemoClientError):
    """The API answered 4xx: the request was refused (unknown id, busy, bad input, token)."""

    exit_code = 1


class Unreachable(SemoClientError):
    """No answer at all: nothing listens at the address, DNS, TLS, a dropped connection."""

    exit_code = 3


class TimedOut(SemoClientError):
    """No answer in time: the API's own 504 (the command goes on), or our timeout."""

    exit_code = 4


class ApiFailed(SemoClientError):
    """The API answered 5xx: a dependency is down (503) or a bug (500)."""

    exit_code = 5


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    api_url: str
    token: str
    #: where each came from, for error messages: "--api-url", "SEMO_TOKEN", a dev.json path
    api_url_from: str
    token_from: str
    dev_json: Path | None = None
    dev_info: Mapping[str, Any] | None = None


def find_dev_json(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path | None:
    """`$SEMO_HOME/dev.json`, else `.semo/dev.json` here or in the nearest parent that has one."""
    env = os.environ if env is None else env
    if env.get("SEMO_HOME"):
        path = Path(env["SEMO_HOME"]).expanduser() / "dev.json"
        return path if path.exists() else None
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        path = folder / ".semo" / "dev.json"
        if path.exists():
            return path
    return None


def resolve_config(api_url: str | None = None, token: str | None = None, *,
                   env: Mapping[str, str] | None = None, cwd: Path | None = None) -> ClientConfig:
    """Flags, then the environment, then `semo dev`'s dev.json."""
    env = os.environ if env is None else env
    dev_json = find_dev_json(env, cwd)
    info: dict[str, Any] = {}
    if dev_json is not None:
        try:
            info = json.loads(dev_json.read_text())
        except (OSError, ValueError):
            info = {}
    url, url_from = _first((api_url, "--api-url"), (env.get("SEMO_API_URL"), "SEMO_API_URL"),
                           (info.get("api_url"), str(dev_json)))
    tok, tok_from = _first((token, "--token"), (env.get("SEMO_TOKEN"), "SEMO_TOKEN"),
                           (info.get("token"), str(dev_json)))
    if not tok:
        raise ConfigError(
            "no API token: pass --token, or set SEMO_TOKEN, or run `semo dev` here (it writes "
            ".semo/dev.json with a token that opens every office). With the deployment's JWT "
            "secret, `semo token --office OFFICE_ID` mints one.")
    return ClientConfig(api_url=(url or DEFAULT_API_URL).rstrip("/"), token=tok.strip(),
                        api_url_from=url_from or "default", token_from=tok_from,
                        dev_json=dev_json, dev_info=info or None)


def _first(*candidates: tuple[str | None, str]) -> tuple[str | None, str]:
    for value, source in candidates:
        if value:
            return value, source
    return None, ""


# --- the client ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event: `output` ({offset, next_offset, data}) or `status`."""

    event: str
    data: dict[str, Any]
    id: str | None = None


def _seg(value: str) -> str:
    return quote(value, safe="")


class SemoClient:
    def __init__(self, config: ClientConfig, *, command_timeout_s: float = COMMAND_TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.command_timeout_s = command_timeout_s
        self._http = httpx.Client(
            base_url=config.api_url, transport=transport,
            headers={"Authorization": f"Bearer {config.token}", "User-Agent": "semo-cli"},
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SemoClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- offices ---------------------------------------------------------------------------

    def create_office(self, body: dict[str, Any]) -> dict:
        return self._command("POST", "/api/offices", body)

    def list_offices(self) -> list[dict]:
        return self._get("/api/offices")["offices"]

    def get_office(self, office_id: str) -> dict:
        return self._get(f"/api/offices/{_seg(office_id)}")

    def office_usage(self, office_id: str, *, group_by: str = "session",
                     since: str | None = None, until: str | None = None) -> dict:
        params = {"group_by": group_by, "since": since, "until": until}
        return self._get(f"/api/offices/{_seg(office_id)}/usage",
                         params={k: v for k, v in params.items() if v is not None})

    def delete_office(self, office_id: str) -> dict:
        return self._command("DELETE", f"/api/offices/{_seg(office_id)}")

    # --- sessions --------------------------------------------------------------------------

    def _session(self, office_id: str, session_id: str = "") -> str:
        base = f"/api/offices/{_seg(office_id)}/sessions"
        return f"{base}/{_seg(session_id)}" if session_id else base

    def create_session(self, office_id: str, body: dict[str, Any]) -> dict:
        return self._command("POST", self._session(office_id), body)

    def list_sessions(self, office_id: str) -> list[dict]:
        return self._get(self._session(office_id))["sessions"]

    def get_session(self, office_id: str, session_id: str) -> dict:
        return self._get(self._session(office_id, session_id))

    def prompt(self, office_id: str, session_id: str, prompt: str, *, job_id: str | None = None,
               timeout_s: float | None = None) -> dict:
        body: dict[str, Any] = {"prompt": prompt}
        if job_id:
            body["job_id"] = job_id
        if timeout_s:
            body["timeout_s"] = timeout_s
        return self._command("POST", f"{self._session(office_id, session_id)}/prompt", body)

    def keys(self, office_id: str, session_id: str, keys: list[str],
             text: str | None = None) -> dict:
        body: dict[str, Any] = {"keys": keys}
        if text:
            body["text"] = text
        return self._command("POST", f"{self._session(office_id, session_id)}/keys", body)

    def cancel(self, office_id: str, session_id: str) -> dict:
        return self._command("POST", f"{self._session(office_id, session_id)}/cancel")

    def release(self, office_id: str, session_id: str) -> dict:
        return self._command("POST", f"{self._session(office_id, session_id)}/release")

    def terminate(self, office_id: str, session_id: str) -> dict:
        return self._command("DELETE", self._session(office_id, session_id))

    def output(self, office_id: str, session_id: str, *, since: int = 0, limit: int = 65536,
               format: str = "text", tail: int | None = None) -> dict:
        params = {"since": since, "limit": limit, "format": format}
        if tail is not None:
            params["tail"] = tail
        return self._get(f"{self._session(office_id, session_id)}/output", params=params)

    def screen(self, office_id: str, session_id: str) -> dict:
        return self._get(f"{self._session(office_id, session_id)}/screen")

    def stream_output(self, office_id: str, session_id: str, *, since: int = 0,
                      format: str = "text") -> Iterator[StreamEvent]:
        """The live output stream (SSE). Ends when the session is terminated; raises
        `TimedOut` when the stream shows no sign of life for STREAM_IDLE_TIMEOUT_S."""
        url = f"{self._session(office_id, session_id)}/output/stream"
        timeout = httpx.Timeout(STREAM_IDLE_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        params = {"since": since, "format": format}
        with self._errors(), self._http.stream("GET", url, params=params, timeout=timeout,  # type: ignore[arg-type]
                                               headers={"Accept": "text/event-stream"}) as r:
            if r.status_code >= 400:
                r.read()
                raise _error_for(r)
            yield from _parse_sse(r.iter_lines())

    # --- jobs, commands, health -----------------------------------------------------------

    def get_job(self, office_id: str, job_id: str) -> dict:
        return self._get(f"/api/offices/{_seg(office_id)}/jobs/{_seg(job_id)}")

    def get_command(self, office_id: str, command_id: str) -> dict:
        return self._get(f"/api/offices/{_seg(office_id)}/commands/{_seg(command_id)}")

    def console_link(self, next_path: str = "/console/") -> dict:
        """A one-time login link to the web console for this token's user."""
        return self._request("POST", "/api/console/login-codes", json={"next": next_path}).json()

    def list_machines(self) -> list[dict]:
        return self._get("/api/machines")["machines"]

    def _webhooks(self, office_id: str, webhook_id: str = "") -> str:
        base = f"/api/offices/{_seg(office_id)}/webhooks"
        return f"{base}/{_seg(webhook_id)}" if webhook_id else base

    def create_webhook(self, office_id: str, body: dict[str, Any]) -> dict:
        return self._request("POST", self._webhooks(office_id), json=body).json()

    def list_webhooks(self, office_id: str) -> list[dict]:
        return self._get(self._webhooks(office_id))["webhooks"]

    def webhook_deliveries(self, office_id: str, webhook_id: str, *,
                           limit: int = 100) -> list[dict]:
        return self._get(f"{self._webhooks(office_id, webhook_id)}/deliveries",
                         params={"limit": limit})["deliveries"]

    def delete_webhook(self, office_id: str, webhook_id: str) -> None:
        self._request("DELETE", self._webhooks(office_id, webhook_id))

    def ready(self) -> dict:
        r = self._request("GET", "/readyz", ok=(200, 503))
        return r.json()

    # --- plumbing --------------------------------------------------------------------------

    def _get(self, path: str, params: dict | None = None) -> Any:
        return self._request("GET", path, params=params).json()

    def _command(self, method: str, path: str, body: dict | None = None) -> dict:
        timeout = httpx.Timeout(self.command_timeout_s, connect=CONNECT_TIMEOUT_S)
        return self._request(method, path, json=body, timeout=timeout).json()

    def _request(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kw) -> httpx.Response:
        with self._errors():
            r = self._http.request(method, path, **kw)
        if r.status_code >= 400 and r.status_code not in ok:
            raise _error_for(r)
        return r

    def _errors(self):
        return _translate(self.config.api_url)


class _translate:
    """httpx's exceptions as this module's, at the boundary."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:  # type: ignore[exit-return]
        if err is None or not isinstance(err, httpx.HTTPError):
            return False
        if isinstance(err, httpx.TimeoutException):
            what = "connecting to" if isinstance(err, httpx.ConnectTimeout) else "an answer from"
            raise TimedOut(f"timed out waiting for {what} the API at {self.api_url}") from None
        if isinstance(err, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError,
                            httpx.WriteError, httpx.UnsupportedProtocol, httpx.ProxyError)):
            raise Unreachable(f"cannot reach the API at {self.api_url}: {_why(err)}") from None
        raise Unreachable(f"request to {self.api_url} failed: {_why(err)}") from None


def _why(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return text.splitlines()[0][:200]


def _error_for(r: httpx.Response) -> SemoClientError:
    try:
        problem = r.json()
        if not isinstance(problem, dict):
            problem = {}
    except ValueError:
        problem = {}
    detail = str(problem.get("detail") or problem.get("title") or r.reason_phrase or "error")
    if r.status_code == 504:
        cls = TimedOut
    elif r.status_code >= 500:
        cls = ApiFailed  # type: ignore[assignment]
    else:
        cls = ApiRefused  # type: ignore[assignment]
    return cls(detail, status=r.status_code, problem=problem)


def _parse_sse(lines: Iterator[str]) -> Iterator[StreamEvent]:
    event, data, ident = "message", [], None  # type: ignore[var-annotated]
    for line in lines:
        if line == "":
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    payload = {"raw": "\n".join(data)}
                yield StreamEvent(event=event, data=payload if isinstance(payload, dict)
                                  else {"value": payload}, id=ident)
            event, data, ident = "message", [], None
        elif line.startswith(":"):
            continue  # a comment: sse-starlette's ping
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                ident = value
