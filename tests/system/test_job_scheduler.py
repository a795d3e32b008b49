"""A job's end reaches the job scheduler: a `job_finished` signal to the workflow named with
the prompt, and a NOTIFY on `job_events` for anything listening to Postgres."""

from __future__ import annotations

import json
import uuid

import psycopg
from temporalio.worker import Worker

from tests.support.scheduler_probe import SchedulerProbe
from tests.support.waiting import wait_for


async def test_job_end_signals_the_scheduler_and_notifies_postgres(http, office, temporal_client,
                                                                   settings):
    queue = f"scheduler-{uuid.uuid4().hex[:6]}"
    listener = await psycopg.AsyncConnection.connect(settings.effective_database_url(),
                                                     autocommit=True)
    await listener.execute("listen job_events")
    async with Worker(temporal_client, task_queue=queue, workflows=[SchedulerProbe]):
        probe = await temporal_client.start_workflow(SchedulerProbe.run, id=f"probe-{queue}",
                                                     task_queue=queue)
        sid = (await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})).json()["session_id"]
        r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={
            "prompt": "printf '[SEMO:%s] %s\\n' ERROR 'no such module'",
            "notify_workflow_id": probe.id})
        job_id = r.json()["job_id"]

        async def noticed():
            seen = await probe.query(SchedulerProbe.seen)
            return seen[0] if seen else None

        notice = await wait_for(noticed, what="the scheduler's signal")
        assert notice.job_id == job_id and notice.session_id == sid
        assert notice.status == "failed" and notice.error == "no such module"

        async def notified():
            async for note in listener.notifies(timeout=0.2, stop_after=1):
                payload = json.loads(note.payload)
                if payload["job_id"] == job_id:
                    return payload
            return None

        payload = await wait_for(notified, what="NOTIFY job_events")
        assert payload == {"job_id": job_id, "session_id": sid, "office_id": office,
                           "status": "failed"}
        await probe.terminate()
    await listener.close()
    await http.delete(f"/api/offices/{office}/sessions/{sid}")
