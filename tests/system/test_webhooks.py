"""Webhooks against a real HTTP receiver on a loopback port: signed as Standard Webhooks says
(verified with the spec's own `standardwebhooks` package), retried with the same
`webhook-id`, logged, disabled when they fail for good, refused when the URL may not be
called; and, with `semo dev` as real processes, delivered after the server worker is killed
mid-retry."""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.devstack import DevStack, wait
from tests.support.processes import live_pids_with_env
from tests.support.tokens import MACHINE_ID, token_for
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import arrived, overridden, subscribe

DONE = "printf '[SEMO:%s]\\n' DONE"


async def new_session(http, office: str) -> str:
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


async def prompt(http, office: str, sid: str, text: str) -> str:
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": text})
    assert r.status_code == 200, r.text
    return r.json()["job_id"]


async def deliveries(http, office: str, webhook_id: str) -> list[dict]:
    r = await http.get(f"/api/offices/{office}/webhooks/{webhook_id}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


async def test_job_done_arrives_signed_as_the_spec_says(http, office, receiver, loopback):
    hook = await subscribe(http, office, receiver.url, ["job.done"], description="CI")
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["job.done"]
    assert hook["enabled"] is True and hook["format"] == "standard"
    sid = await new_session(http, office)
    job_id = await prompt(http, office, sid, f"echo hi; {DONE}")

    [got] = await wait_for(arrived(receiver, "job.done"), what="job.done at the receiver")
    payload = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "job.done" and payload["office_id"] == office
    assert payload["session_id"] == sid and payload["job_id"] == job_id
    assert payload["data"]["status"] == "done"
    assert payload["data"]["completion"]["kind"] == "marker"
    assert datetime.fromisoformat(payload["at"]).tzinfo is not None
    assert got.headers["webhook-id"].startswith("msg_")
    assert got.headers["webhook-signature"].startswith("v1,")
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    # the check can fail: another body, or another secret, does not verify
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(got.body.replace(b"done", b"fail"), got.headers)
    other = (await subscribe(http, office, receiver.url, ["job.failed"]))["secret"]
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(got.body, got.headers)

    [d] = await wait_for(lambda: _finished(http, office, hook["webhook_id"]), what="the log")
    assert d["event_id"] == got.headers["webhook-id"] and d["type"] == "job.done"
    assert d["status"] == "delivered" and d["job_id"] == job_id
    assert [a["status_code"] for a in d["attempts"]] == [204]
    # only what was subscribed: the session's `ready` was not sent
    assert [r.json()["type"] for r in receiver.requests] == ["job.done"]


async def test_the_delivery_log_forgets_finished_deliveries_after_its_retention(
        http, office, receiver, loopback, pool):
    from db.webhooks import prune
    hook = await subscribe(http, office, receiver.url, ["job.done"])
    sid = await new_session(http, office)
    for _ in range(2):
        job_id = await prompt(http, office, sid, DONE)
        await wait_for(lambda: _job_ended(http, office, job_id), what="the job")
    ds = await wait_for(lambda: _finished(http, office, hook["webhook_id"]), what="the log")
    assert len(ds) == 2
    old, new = ds[1]["event_id"], ds[0]["event_id"]
    async with pool.connection() as conn:
        await conn.execute("update webhook_events set at = now() - interval '31 days'"
                           " where id = %s", (old,))
    assert await prune(pool, 30) >= 1
    assert [d["event_id"] for d in await deliveries(http, office, hook["webhook_id"])] == [new]


async def _finished(http, office, webhook_id):
    ds = await deliveries(http, office, webhook_id)
    return ds if ds and all(d["status"] != "pending" for d in ds) else None


async def test_a_500_is_retried_with_the_same_webhook_id_and_both_attempts_are_logged(
        http, office, loopback):
    with Receiver(statuses=[500]) as receiver:
        hook = await subscribe(http, office, receiver.url, ["job.done"])
        sid = await new_session(http, office)
        job_id = await prompt(http, office, sid, DONE)
        first, second = await wait_for(arrived(receiver, "job.done", 2), what="two attempts")
    assert [first.status, second.status] == [500, 204]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    for got in (first, second):
        assert Webhook(hook["secret"]).verify(got.body, got.headers)["job_id"] == job_id
    [d] = await wait_for(lambda: _finished(http, office, hook["webhook_id"]), what="the log")
    assert d["status"] == "delivered" and d["next_attempt_at"] is None
    assert [(a["attempt"], a["status_code"]) for a in d["attempts"]] == [(1, 500), (2, 204)]
    assert "HTTP 500" in d["attempts"][0]["error"] and d["attempts"][1]["error"] is None


async def test_a_receiver_that_does_not_answer_in_time_is_tried_again(http, office, settings):
    with overridden(settings, webhook_allow_loopback=True, webhook_retry_initial_s=0.3,
                    webhook_timeout_s=0.5), Receiver(delays=[3.0]) as receiver:
        hook = await subscribe(http, office, receiver.url, ["job.done"])
        sid = await new_session(http, office)
        await prompt(http, office, sid, DONE)
        first, second = await wait_for(arrived(receiver, "job.done", 2), what="two attempts")
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        [d] = await wait_for(lambda: _finished(http, office, hook["webhook_id"]), what="the log")
    assert d["status"] == "delivered"
    timed_out, ok = d["attempts"]
    assert timed_out["status_code"] is None and "Timeout" in timed_out["error"]
    assert timed_out["duration_ms"] < 2500, "the attempt's timeout cut it short"
    assert ok["status_code"] == 204


async def test_a_delivery_retried_until_pending_shows_its_next_try(http, office, settings):
    with overridden(settings, webhook_allow_loopback=True, webhook_retry_initial_s=30,
                    webhook_retry_max_interval_s=30), Receiver(default=503) as receiver:
        hook = await subscribe(http, office, receiver.url, ["job.done"])
        sid = await new_session(http, office)
        await prompt(http, office, sid, DONE)
        await wait_for(arrived(receiver, "job.done"), what="the first attempt")

        async def logged():
            ds = await deliveries(http, office, hook["webhook_id"])
            return ds if ds and ds[0]["attempts"] else None
        [d] = await wait_for(logged, what="the attempt in the log")
        assert d["status"] == "pending" and d["last_status_code"] == 503
        due = datetime.fromisoformat(d["next_attempt_at"]).timestamp() - time.time()
        assert 15 < due <= 31, due
        # deleting the webhook ends it: the retry finds it gone and sends nothing
        r = await http.delete(f"/api/offices/{office}/webhooks/{hook['webhook_id']}")
        assert r.status_code == 204


async def test_waiting_input_arrives_with_the_question(http, office, receiver, loopback):
    hook = await subscribe(http, office, receiver.url, ["session.waiting_input"])
    sid = await new_session(http, office)
    job_id = await prompt(http, office, sid, f"read -p 'Continue? [y/N] ' answer; echo got-$answer; {DONE}")
    [got] = await wait_for(arrived(receiver, "session.waiting_input"), what="waiting_input")
    payload = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert payload["session_id"] == sid and payload["job_id"] == job_id
    data = payload["data"]
    # the busy row and the waiting one race (versions order them): either came before
    assert data["status"] == "waiting_input" and data["previous_status"] in ("busy", "ready")
    assert "Continue? [y/N]" in data["question"]
    pending = data["pending_input"]
    assert pending["kind"] == "dialog" and "Continue? [y/N]" in pending["question"]
    assert pending["input_id"]


async def test_an_agent_killed_again_and_again_sends_failed_and_circuit_open(
        http, office, receiver, loopback):
    hook = await subscribe(http, office, receiver.url,
                           ["session.failed", "session.circuit_open", "session.ready"])
    sid = await new_session(http, office)
    for strike in range(3):
        # each strike hits a fresh agent: the one the previous restart brought up
        async def ready():
            s = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
            return s["status"] == "ready" and s["restarts"] == strike
        await wait_for(ready, what=f"ready before strike {strike + 1}")
        agents = live_pids_with_env("SEMO_SESSION_ID", sid)
        assert agents
        for pid in agents:
            os.kill(pid, signal.SIGKILL)
    [opened] = await wait_for(arrived(receiver, "session.circuit_open"), what="circuit_open")
    [failed] = await wait_for(arrived(receiver, "session.failed"), what="session.failed")
    for got in (opened, failed):
        payload = Webhook(hook["secret"]).verify(got.body, got.headers)
        assert payload["session_id"] == sid and "job_id" not in payload
        assert payload["data"]["circuit"] == "open" and payload["data"]["status"] == "failed"
        assert "signal 9" in payload["data"]["last_error"]
    assert opened.headers["webhook-id"] != failed.headers["webhook-id"]
    # ready once at the start and after each of the two restarts before the circuit opened
    await wait_for(arrived(receiver, "session.ready", 3), what="three session.ready")
    assert len(receiver.of_type("session.ready")) == 3
    r = await http.delete(f"/api/offices/{office}/sessions/{sid}")
    assert r.status_code == 200, r.text


async def test_a_host_name_is_resolved_checked_and_connected_to(http, office, receiver, loopback):
    port = receiver.server.server_address[1]
    hook = await subscribe(http, office, f"http://localhost:{port}/hook", ["job.done"])
    sid = await new_session(http, office)
    await prompt(http, office, sid, DONE)
    [got] = await wait_for(arrived(receiver, "job.done"), what="job.done via localhost")
    assert Webhook(hook["secret"]).verify(got.body, got.headers)["session_id"] == sid
    # sent to the address that was checked, under the name it was given
    assert got.headers["host"] == f"localhost:{port}"


def test_an_http_url_is_pinned_to_the_checked_address_and_https_is_not():
    from ipaddress import ip_address

    from semo.webhooks import pinned
    assert pinned("http://hooks.example.com:8080/in?x=1", ip_address("93.184.216.34")) == \
        ("http://93.184.216.34:8080/in?x=1", "hooks.example.com:8080")
    assert pinned("http://hooks.example.com/in", ip_address("2606:2800:220:1::1")) == \
        ("http://[2606:2800:220:1::1]/in", "hooks.example.com")
    # a certificate must match the name: rebinding cannot pass it, so the name is kept
    assert pinned("https://hooks.example.com/in", ip_address("93.184.216.34")) == \
        ("https://hooks.example.com/in", None)
    assert pinned("http://127.0.0.1:9/in", ip_address("127.0.0.1")) == ("http://127.0.0.1:9/in", None)


async def test_slack_format_sends_text_unsigned(http, office, receiver, loopback):
    await subscribe(http, office, receiver.url, ["session.ready"], format="slack")
    sid = await new_session(http, office)

    async def texts():
        return [r for r in receiver.requests if "text" in r.json()]
    [got] = await wait_for(texts, what="the slack message")
    assert got.json() == {"text": f"session `{office}/{sid}` is ready"}
    assert "webhook-signature" not in got.headers


async def test_a_webhook_that_fails_for_good_is_disabled_and_says_why(http, office, settings):
    with overridden(settings, webhook_allow_loopback=True, webhook_retry_initial_s=0.3,
                    webhook_retry_max_interval_s=0.5, webhook_retry_for_s=2.0), \
            Receiver(default=500) as receiver:
        hook = await subscribe(http, office, receiver.url, ["job.done"])
        sid = await new_session(http, office)
        await prompt(http, office, sid, DONE)

        async def disabled():
            [h] = (await http.get(f"/api/offices/{office}/webhooks")).json()["webhooks"]
            return h if not h["enabled"] else None
        h = await wait_for(disabled, what="the webhook to be disabled")
        assert "no 2xx answer" in h["disabled_reason"] and "HTTP 500" in h["disabled_reason"]
        assert h["disabled_at"] is not None
        [d] = await deliveries(http, office, hook["webhook_id"])
        assert d["status"] == "failed" and len(d["attempts"]) >= 2
        assert all(a["status_code"] == 500 for a in d["attempts"])
        # a disabled webhook is sent nothing more
        job_id = await prompt(http, office, sid, DONE)
        await wait_for(lambda: _job_ended(http, office, job_id), what="the second job")
        assert len(await deliveries(http, office, hook["webhook_id"])) == 1


async def _job_ended(http, office, job_id):
    return (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()["status"] != "running"


REFUSED = [
    ({"url": "ftp://example.com/hook"}, "http:// or https://"),
    ({"url": "file:///etc/passwd"}, "http:// or https://"),
    ({"url": "javascript:alert(1)"}, "http:// or https://"),
    ({"url": "http://"}, "no host"),
    ({"url": "http://user:pw@example.com/"}, "user or password"),
    ({"url": "http://127.0.0.1:9/hook"}, "loopback"),
    ({"url": "http://localhost:9/hook"}, "loopback"),
    ({"url": "http://[::1]:9/hook"}, "loopback"),
    ({"url": "http://[::ffff:127.0.0.1]/hook"}, "loopback"),
    ({"url": "http://10.1.2.3/hook"}, "private"),
    ({"url": "http://192.168.0.1/hook"}, "private"),
    ({"url": "http://169.254.169.254/latest/meta-data/"}, "link-local"),
    ({"url": "http://[fe80::1]/hook"}, "link-local"),
    ({"url": "http://0.0.0.0:8000/"}, "reserved"),
    ({"url": "http://no-such-host.invalid/hook"}, "cannot resolve"),
    ({"url": "http://93.184.216.34/hook", "events": ["job.exploded"]}, "unknown event type"),
    ({"url": "http://93.184.216.34/hook", "events": []}, "events"),
    ({"url": "http://93.184.216.34/hook", "secret": "whsec_c2hvcnQ="}, "secret"),
    ({"url": "http://93.184.216.34/hook", "format": "teams"}, "format"),
]


async def test_bad_urls_and_event_types_are_refused_and_nothing_is_stored(http, office, settings):
    with overridden(settings, webhook_allow_loopback=False, webhook_allow_private=False):
        for body, says in REFUSED:
            r = await http.post(f"/api/offices/{office}/webhooks",
                                json={"events": ["job.done"], **body})
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"] == "application/problem+json", body
            assert says in r.json()["detail"], (body, r.json())
        r = await http.get(f"/api/offices/{office}/webhooks")
        assert r.json() == {"webhooks": []}
    # configurable: a deployment that allows loopback (as `semo dev` does) takes it
    with overridden(settings, webhook_allow_loopback=True):
        hook = await subscribe(http, office, "http://127.0.0.1:9/hook", ["job.done"])
        r = await http.post(f"/api/offices/{office}/webhooks",
                            json={"url": "http://10.1.2.3/hook", "events": ["job.done"]})
        assert r.status_code == 422, "loopback allowed does not open private networks"
    r = await http.get(f"/api/offices/{office}/webhooks")
    assert [h["webhook_id"] for h in r.json()["webhooks"]] == [hook["webhook_id"]]


async def test_list_hides_secrets_delete_works_and_other_offices_see_nothing(
        http, office, api_url, loopback):
    from httpx import AsyncClient

    from semo.webhooks import new_secret
    secret = new_secret()
    hook = await subscribe(http, office, "http://127.0.0.1:9/hook", ["job.done", "session.failed"],
                           secret=secret)
    assert hook["secret"] == secret and hook["events"] == ["session.failed", "job.done"]
    r = await http.get(f"/api/offices/{office}/webhooks")
    [listed] = r.json()["webhooks"]
    assert listed["webhook_id"] == hook["webhook_id"] and "secret" not in listed
    assert secret.removeprefix("whsec_") not in r.text

    wid = hook["webhook_id"]
    stranger_office = f"t-{uuid.uuid4().hex[:10]}"
    r = await http.post("/api/offices", json={"office_id": stranger_office, "name": "other",
                                              "machine_id": MACHINE_ID, "agent": "shell",
                                              "warm_roles": []})
    assert r.status_code == 201, r.text
    stranger = {"Authorization": f"Bearer {token_for([stranger_office], sub='stranger')}"}
    async with AsyncClient(base_url=api_url, timeout=30, headers=stranger) as other:
        for method, path in (("GET", f"/api/offices/{office}/webhooks"),
                             ("GET", f"/api/offices/{office}/webhooks/{wid}/deliveries"),
                             ("DELETE", f"/api/offices/{office}/webhooks/{wid}"),
                             ("POST", f"/api/offices/{office}/webhooks")):
            r = await other.request(method, path, json={"url": "http://127.0.0.1:9/",
                                                        "events": ["job.done"]})
            assert r.status_code == 404, (method, path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        # its own office does not reach another office's webhook by id either
        for method, path in (("GET", f"/api/offices/{stranger_office}/webhooks/{wid}/deliveries"),
                             ("DELETE", f"/api/offices/{stranger_office}/webhooks/{wid}")):
            r = await other.request(method, path)
            assert r.status_code == 404 and "not found" in r.json()["detail"], r.text
        assert (await other.get(f"/api/offices/{stranger_office}/webhooks")).json() == {"webhooks": []}

    r = await http.delete(f"/api/offices/{office}/webhooks/{wid}")
    assert r.status_code == 204 and r.content == b""
    assert (await http.get(f"/api/offices/{office}/webhooks")).json() == {"webhooks": []}
    assert (await http.delete(f"/api/offices/{office}/webhooks/{wid}")).status_code == 404
    assert (await http.get(f"/api/offices/{office}/webhooks/{wid}/deliveries")).status_code == 404


# --- with real processes ------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # `semo dev` allows loopback receivers; the retry comes 4 s after a failure
    stack = DevStack(tmp_path_factory.mktemp("webhooks"), webhook_retry_initial_s=4,
                     webhook_retry_max_interval_s=4)
    stack.start()
    yield stack
    stack.stop()


def test_a_server_worker_killed_mid_retry_still_delivers_with_the_same_id(stack):
    with stack.api() as api, Receiver(default=500) as receiver:
        office = f"w-{uuid.uuid4().hex[:8]}"
        r = api.post("/api/offices", json={"office_id": office, "name": "hooks", "agent": "shell",
                                           "machine_id": stack.machine_id, "warm_roles": []})
        assert r.status_code == 201, r.text
        r = api.post(f"/api/offices/{office}/webhooks",
                     json={"url": receiver.url, "events": ["job.done"]})
        assert r.status_code == 201, r.text
        hook = r.json()
        r = api.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": DONE})
        assert r.status_code == 200, r.text
        job_id = r.json()["job_id"]

        log = f"/api/offices/{office}/webhooks/{hook['webhook_id']}/deliveries"

        def attempts() -> list[dict]:
            ds = api.get(log).json()["deliveries"]
            return ds[0]["attempts"] if ds else []
        # the first attempt answered and logged: the delivery now waits for its retry
        wait(attempts, 30, "the first attempt in the log")
        worker = stack.running_info()["pids"]["server_worker"]
        os.kill(worker, signal.SIGKILL)
        assert len(receiver.requests) == 1, "killed before the retry"
        receiver.default = 204
        stack.restarted("server_worker", worker)

        wait(lambda: any(r.status == 204 for r in receiver.requests), 60, "the retry to land")
        ids = {r.headers["webhook-id"] for r in receiver.requests}
        assert len(ids) == 1, "every attempt carries the event's id"
        for got in receiver.requests:
            assert Webhook(hook["secret"]).verify(got.body, got.headers)["job_id"] == job_id
        assert [r.status for r in receiver.requests][-1] == 204

        def logged():
            ds = api.get(log).json()["deliveries"]
            return ds if ds[0]["status"] == "delivered" else None
        [d] = wait(logged, 30, "the delivery to be logged as delivered")
        codes = [a["status_code"] for a in d["attempts"]]
        assert codes[0] == 500 and codes[-1] == 204, codes
        assert d["event_id"] in ids
