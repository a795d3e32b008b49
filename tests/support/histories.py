"""Recorded workflow histories: replayed against today's code, recorded on request."""

from __future__ import annotations

import os

from tests.support.paths import TESTS

HISTORIES = TESTS / "histories"


async def replay_and_maybe_record(client, workflow_id: str, name: str) -> None:
    """Replay a finished run's history against today's workflow code (it must not diverge);
    with SEMO_RECORD_HISTORIES=1, also keep it under tests/histories/ for CI to replay."""
    import json

    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    from worker.server import WORKFLOWS

    history = await client.get_workflow_handle(workflow_id).fetch_history()
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(history)
    if os.environ.get("SEMO_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(json.dumps(
            {"workflow_id": workflow_id, "history": json.loads(history.to_json())}, indent=1))


