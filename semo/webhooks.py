"""Webhooks' rules, in one place for the API (which refuses bad input) and the delivery
activity (which checks again before each send): the event types, which URLs may be called,
the Standard Webhooks signature and the Slack text.

Signing follows https://www.standardwebhooks.com/: the key is the base64 after `whsec_`, the
signed content `{webhook-id}.{webhook-timestamp}.{body}`, the signature
`v1,` + base64(HMAC-SHA256). It is a few lines of the standard library; the tests verify it
with the spec's own `standardwebhooks` package.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from semo.errors import InvalidInput
from semo.settings import Settings

EVENT_TYPES = (
    "session.waiting_input",
    "session.ready",
    "session.failed",
    "session.circuit_open",
    "session.handed_off",
    "job.done",
    "job.failed",
    "job.cancelled",
    "job.timed_out",
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SECRET_PREFIX = "whsec_"
#: how long resolving a webhook's host may take
RESOLVE_TIMEOUT_S = 5.0


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret; InvalidInput if it is not base64 of 24..64 bytes."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        key = b""
    if not 24 <= len(key) <= 64:
        raise InvalidInput("secret: must be `whsec_` followed by the base64 of 24 to 64 random "
                           "bytes (leave it out to have one made)")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def event_body(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON an event is sent as: `{type, office_id, session_id, job_id?, data, at}`."""
    body = {"type": event["type"], "office_id": event["office_id"],
            "session_id": event["session_id"]}
    if event.get("job_id"):
        body["job_id"] = event["job_id"]
    return {**body, "data": event["data"], "at": event["at"].isoformat()}


def slack_text(event: dict[str, Any]) -> str:
    """One line a person reads in a channel (Slack's incoming webhooks take `{"text": ...}`)."""
    data = event["data"] or {}
    where = f"`{event['office_id']}/{event['session_id']}`"
    kind = event["type"]
    if kind.startswith("job."):
        line = f"job `{event['job_id']}` {kind.split('.', 1)[1].replace('_', ' ')} in {where}"
        if data.get("error"):
            line += f": {data['error']}"
        if data.get("prompt"):
            line += f"\n> {data['prompt'][:200]}"
        return line
    if kind == "session.waiting_input":
        question = data.get("question") or (data.get("pending_input") or {}).get("question")
        return f"session {where} is waiting for input" + (f": {question}" if question else "")
    if kind == "session.ready":
        return f"session {where} is ready"
    if kind == "session.handed_off":
        line = f"session {where} handed off branch `{data.get('branch')}` at " \
               f"`{(data.get('commit') or '')[:12]}`"
        return line + (f": {data['pull_request_url']}" if data.get("pull_request_url") else "")
    if kind == "session.circuit_open":
        return f"session {where} stopped restarting (circuit open): {data.get('last_error') or ''}"
    return f"session {where} failed" + (f": {data['last_error']}" if data.get("last_error") else "")


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def check_events(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"events: unknown event type(s) {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(EVENT_TYPES)}")
    if not events:
        raise InvalidInput(f"events: name at least one of {', '.join(EVENT_TYPES)}")
    return sorted(set(events), key=EVENT_TYPES.index)


def _address_refused(ip: IPAddress, settings: Settings) -> str | None:
    """Why calling this address is not allowed, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_loopback(settings) else "a loopback address"
    if settings.webhook_allow_private:
        return None
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "a reserved address"
    if ip.is_private or not ip.is_global:
        return "a private address"
    return None


def allow_loopback(settings: Settings) -> bool:
    if settings.webhook_allow_loopback is not None:
        return settings.webhook_allow_loopback
    return settings.dev_mode


def check_url_form(url: str) -> tuple[str, int]:
    """Host and port of an http(s) URL; InvalidInput otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise InvalidInput(f"url: not a valid URL ({err})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(f"url: must be http:// or https://, not {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise InvalidInput("url: has no host")
    if parts.username or parts.password:
        raise InvalidInput("url: must not carry a user or password (use the signature instead)")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_destination(url: str, settings: Settings) -> list[IPAddress]:
    """Refuse a URL that is not http(s), or whose host resolves to an address this deployment
    does not call (loopback, link-local, private: see Settings.webhook_allow_*). Every address
    the name resolves to must be allowed, so that no answer of a round-robin name slips by.
    Returns the addresses, for the caller to connect to one of them (`pinned`)."""
    host, port = check_url_form(url)
    try:
        ip = ipaddress.ip_address(host)
        addresses = [ip]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
        except (TimeoutError, OSError) as err:
            raise InvalidInput(
                f"url: cannot resolve host {host!r} ({err or 'timed out'})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for ip in addresses:
        reason = _address_refused(ip, settings)
        if reason:
            raise InvalidInput(f"url: {host!r} resolves to {ip}, {reason}, which webhooks may not "
                               f"call here (see SEMO_WEBHOOK_ALLOW_LOOPBACK and "
                               f"SEMO_WEBHOOK_ALLOW_PRIVATE)")
    return addresses


def pinned(url: str, ip: IPAddress) -> tuple[str, str | None]:
    """An http:// URL rewritten to connect to `ip`, the address that was checked, and the
    Host header that names the original host: so that a name resolving to another address
    by the time of the request (DNS rebinding) cannot steer it elsewhere. https:// URLs are
    left as they are: their certificate must match the host, which an address it was
    rebound to cannot present. Returns (url, host header or None)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return url, None  # already an address
    except ValueError:
        pass
    if parts.scheme != "http":
        return url, None
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = literal + (f":{parts.port}" if parts.port else "")
    original = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=netloc)), original
