"""Never lose work: with SEMO_REMOVE_WORKTREES on, stopping or reaping a session removes its
worktree only when nothing in it would be lost (no uncommitted change, no commit that no
remote has). Real PTYs (the `shell` profile), real git with a bare remote, `ClientActivities`
called directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.client import ClientActivities
from activities.worktree import ensure_worktree, remove_worktree, unsaved_work
from tests.support.git import commit_all, make_repo, run as git, with_remote
from tests.support.terminals import client_activities
from workflows.contracts import StartAgentInput, StopAgentInput


@pytest.fixture
async def acts(tmp_path: Path):
    async with client_activities(tmp_path) as acts:
        yield acts


async def _start(acts: ClientActivities, sid: str, repo: Path) -> Path:
    result = await acts.start_agent(StartAgentInput(
        office_id="o", session_id=sid, workflow_id=f"wf-{sid}", agent="shell",
        working_dir=None, generation=0, repository=str(repo)))
    return Path(result.working_dir)


async def test_unpushed_commits_survive_terminate_and_reaping(acts: ClientActivities,
                                                              tmp_path: Path) -> None:
    repo = make_repo(acts.roots[0] / "repo")
    remote = with_remote(repo, tmp_path / "remote.git")

    committed = await _start(acts, "s-commit", repo)
    (committed / "feature.txt").write_text("done\n")
    commit_all(committed, "feature")
    await acts.stop_agent(StopAgentInput(session_id="s-commit"))
    assert (committed / "feature.txt").exists(), "a commit on no remote keeps its worktree"

    dirty = await _start(acts, "s-dirty", repo)
    (dirty / "draft.txt").write_text("half\n")
    await acts.reap_orphans()  # nobody watches it: reaped as an orphan
    assert acts.manager.get("s-dirty") is None, "the orphan's terminal is stopped"
    assert (dirty / "draft.txt").exists(), "uncommitted work keeps its worktree"

    clean = await _start(acts, "s-clean", repo)
    await acts.stop_agent(StopAgentInput(session_id="s-clean"))
    assert not clean.exists(), "a worktree with nothing to lose goes, as the setting asks"

    # once its branch is on the remote, the committed one has nothing to lose either
    branch = git("symbolic-ref", "--short", "HEAD", cwd=committed)
    git("push", "-q", "origin", branch, cwd=committed)
    assert await unsaved_work(repo, committed) is None
    assert await remove_worktree(repo, committed) is True and not committed.exists()
    assert git("rev-parse", f"refs/heads/{branch}", cwd=remote)


async def test_what_counts_as_unsaved_work(tmp_path: Path) -> None:
    root = (tmp_path / "ws").resolve()
    repo = make_repo(root / "repo")
    path = root / "wt"
    await ensure_worktree(repo, path, "semo/o/BE-1")
    assert await unsaved_work(repo, path) is None, "a new worktree holds nothing of its own"
    (path / ".claude").mkdir()
    (path / ".claude" / "CLAUDE.md").write_text("persona\n")
    assert await unsaved_work(repo, path) is None, "semo's own files are not work"
    (path / ".claude" / "commands.md").write_text("the agent's\n")
    assert await unsaved_work(repo, path) == "1 uncommitted change(s)", \
        "other files under .claude/ are the agent's work"
    commit_all(path, "commands")
    assert await unsaved_work(repo, path) == "1 commit(s) on no remote"
    (repo / "later.txt").write_text("later\n")
    commit_all(repo, "main moves on")
    assert await unsaved_work(repo, path) == "1 commit(s) on no remote", \
        "the repository's own new commits are not the session's"
