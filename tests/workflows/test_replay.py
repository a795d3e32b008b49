"""Recorded workflow histories (tests/histories/*.json, from real runs) replay against the
current workflow code. A change that breaks them needs `workflow.patched` versioning.
Re-record with `SEMO_RECORD_HISTORIES=1 make test`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.support.paths import TESTS
from worker.server import WORKFLOWS

HISTORIES = sorted((TESTS / "histories").glob("*.json"))


def test_there_are_recorded_histories():
    assert any(p.name.startswith("session_") for p in HISTORIES), "no SessionWorkflow history recorded"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path):
    data = json.loads(path.read_text())
    history = WorkflowHistory.from_json(data["workflow_id"], data["history"])
    result = await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter) \
        .replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
