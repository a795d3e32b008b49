"""Session worktrees with real git: made, reused, kept out of commits, removed only on request."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from activities.persona import PersonaInjector
from activities.worktree import (
    WorktreeError,
    branch_name,
    check_repository,
    ensure_worktree,
    remove_worktree,
    session_worktree,
)
from semo import procfs
from tests.support.git import make_repo, run
from tests.support.waiting import wait_for
from workflows.contracts import Persona


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root.resolve()


def test_branch_names_are_valid_git_branches() -> None:
    assert branch_name("acme", "BE", "be-0123456789ab") == "semo/acme/BE-0123456789ab"
    assert branch_name("a..b.lock", "QA", "x") == "semo/a.b/QA-x"


@settings(max_examples=60, deadline=None)
@given(office=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
       role=st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,10}", fullmatch=True),
       sid=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True))
def test_any_ids_give_a_valid_branch_name(office: str, role: str, sid: str) -> None:
    name = branch_name(office, role, sid)
    assert name.startswith("semo/")
    ok = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True)
    assert ok.returncode == 0, name


async def test_a_session_gets_its_own_worktree_and_a_restart_reuses_it(ws: Path) -> None:
    repo = make_repo(ws / "repo")
    path = ws / "office" / "be-1"
    path.mkdir(parents=True)  # resolve_working_dir makes the folder first: empty is fine
    wt = await session_worktree(str(repo), path, office_id="office", role="BE", session_id="be-1",
                                workspace_roots=[ws], repository_roots=[])
    assert wt.created and wt.branch == "semo/office/BE-1"
    assert run("rev-parse", "--abbrev-ref", "HEAD", cwd=path) == "semo/office/BE-1"
    assert (path / "README.md").read_text() == "hello\n"

    (path / "work.txt").write_text("in progress")
    again = await session_worktree(str(repo), path, office_id="office", role="BE", session_id="be-1",
                                   workspace_roots=[ws], repository_roots=[])
    assert not again.created and again.branch == "semo/office/BE-1"
    assert (path / "work.txt").read_text() == "in progress", "a restart keeps the work"


async def test_a_worktree_deleted_by_hand_is_made_again_on_its_branch(ws: Path) -> None:
    repo = make_repo(ws / "repo")
    path = ws / "s1"
    await ensure_worktree(repo, path, "semo/o/BE-s1")
    (path / "f.txt").write_text("x")
    run("add", "f.txt", cwd=path)
    run("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "work", cwd=path)
    subprocess.run(["rm", "-rf", str(path)], check=True)
    wt = await ensure_worktree(repo, path, "semo/o/BE-s1")
    assert wt.created and (path / "f.txt").read_text() == "x", "the branch's commits are back"


async def test_a_folder_that_is_not_a_worktree_is_refused(ws: Path) -> None:
    repo = make_repo(ws / "repo")
    (ws / "busy").mkdir()
    (ws / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(WorktreeError, match="not a worktree"):
        await ensure_worktree(repo, ws / "busy", "semo/o/BE-x")
    other = make_repo(ws / "other")
    await ensure_worktree(other, ws / "wt-other", "semo/o/BE-y")
    with pytest.raises(WorktreeError, match="not a worktree"):
        await ensure_worktree(repo, ws / "wt-other", "semo/o/BE-y")


def test_the_repository_must_be_inside_an_allowed_root(ws: Path, tmp_path: Path) -> None:
    elsewhere = make_repo(tmp_path / "elsewhere")
    with pytest.raises(WorktreeError, match="SEMO_REPOSITORY_ROOTS"):
        check_repository(str(elsewhere), [ws], [])
    (ws / "sneaky").symlink_to(elsewhere)
    with pytest.raises(WorktreeError, match="outside"):
        check_repository(str(ws / "sneaky"), [ws], [])
    with pytest.raises(WorktreeError, match="absolute"):
        check_repository("relative/repo", [ws], [])
    assert check_repository(str(elsewhere), [ws], [tmp_path]) == elsewhere.resolve()


async def test_git_errors_are_clear(ws: Path) -> None:
    (ws / "plain").mkdir()
    with pytest.raises(WorktreeError, match="not a git repository"):
        await ensure_worktree(ws / "plain", ws / "wt", "semo/o/BE-1")
    (ws / "empty").mkdir()
    run("init", "-q", cwd=ws / "empty")
    with pytest.raises(WorktreeError, match="no commits"):
        await ensure_worktree(ws / "empty", ws / "wt2", "semo/o/BE-2")


async def test_semo_files_stay_out_of_the_agents_commits(ws: Path) -> None:
    repo = make_repo(ws / "repo", {"README.md": "hi\n", ".claude/CLAUDE.md": "# Team notes\n"})
    path = ws / "s"
    await ensure_worktree(repo, path, "semo/o/BE-s")
    PersonaInjector([ws]).inject_persona(path, Persona(name="Bea", role="BE"))
    (path / ".claude" / "settings.local.json").write_text("{}")
    assert (path / ".claude" / "CLAUDE.md").read_text().endswith("# Team notes\n")
    assert run("status", "--porcelain", cwd=path) == "", "neither file shows up for `git add -A`"
    assert run("status", "--porcelain", cwd=repo) == "", "the user's own checkout is untouched"


async def test_remove_keeps_a_dirty_worktree_unless_forced(ws: Path) -> None:
    repo = make_repo(ws / "repo")
    path = ws / "s"
    await ensure_worktree(repo, path, "semo/o/BE-s")
    (path / "unsaved.txt").write_text("work")
    assert await remove_worktree(repo, path) is False and path.exists()
    assert await remove_worktree(repo, path, force=True) is True and not path.exists()
    assert "semo/o/BE-s" in run("branch", "--list", "semo/*", cwd=repo), "the branch stays"

    clean = ws / "c"
    await ensure_worktree(repo, clean, "semo/o/BE-c")
    PersonaInjector([ws]).inject_persona(clean, None)  # our own files do not count as work
    assert await remove_worktree(repo, clean) is True and not clean.exists()


async def test_a_git_that_hangs_is_cut_off(ws: Path, tmp_path: Path, monkeypatch) -> None:
    """A git that never answers (a stand-in on PATH that sleeps: a hung credential helper, a
    dead network mount) is killed, with what it started, once its time is up."""
    repo = make_repo(ws / "repo")
    stub = tmp_path / "bin" / "git"
    stub.parent.mkdir()
    stub.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'pid'}\nsleep 300 & wait\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}:{os.environ['PATH']}")
    with pytest.raises(WorktreeError, match="took longer than 0.5s"):
        await ensure_worktree(repo, ws / "slow", "semo/o/BE-slow", timeout_s=0.5)
    group = (tmp_path / "pid").read_text().strip().encode()  # git leads its own group

    async def all_gone():
        return not [p for p, f in procfs.processes()
                    if f[procfs.PGRP] == group and f[procfs.STATE] != b"Z"]
    await wait_for(all_gone, timeout=10, what="the hung git and its child killed")
