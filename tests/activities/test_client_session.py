"""A session on this machine is one `ClientSession` record: stopping it and reaping it as an
orphan clean up the same things (terminal, hooks, usage, worktree).

Real parts: a real PTY (the `shell` profile), real git worktrees, `ClientActivities` called
directly (no Temporal: nothing signals, the session has no workflow to tell)."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.client import ClientActivities
from tests.support.git import make_repo
from tests.support.terminals import client_activities
from workflows.contracts import StartAgentInput, StopAgentInput


@pytest.fixture
async def acts(tmp_path: Path):
    async with client_activities(tmp_path) as acts:
        yield acts


async def _start(acts: ClientActivities, sid: str) -> Path:
    root = acts.roots[0]
    repo = make_repo(root / f"repo-{sid}")
    result = await acts.start_agent(StartAgentInput(
        office_id="o", session_id=sid, workflow_id=f"wf-{sid}", agent="shell",
        working_dir=None, generation=0, repository=str(repo)))
    path = Path(result.working_dir)
    assert (path / ".git").exists(), "the session runs in a worktree of the repository"
    return path


async def test_stopping_a_session_removes_its_worktree(acts: ClientActivities) -> None:
    path = await _start(acts, "s-stop")
    await acts.stop_agent(StopAgentInput(session_id="s-stop"))
    assert not path.exists(), "SEMO_REMOVE_WORKTREES: a clean worktree goes with its session"
    assert acts.manager.get("s-stop") is None


async def test_a_reaped_orphan_is_cleaned_up_like_a_stopped_session(
        acts: ClientActivities) -> None:
    path = await _start(acts, "s-orphan")
    term = acts.manager.get("s-orphan")
    assert term is not None and term.leases == 0  # no watch_agent: nobody supervises it
    await acts.reap_orphans()
    assert acts.manager.get("s-orphan") is None, "the orphan's terminal is stopped"
    assert not path.exists(), "SEMO_REMOVE_WORKTREES: a reaped session's worktree goes too"
    await acts.stop_agent(StopAgentInput(session_id="s-orphan"))  # a late stop is harmless
