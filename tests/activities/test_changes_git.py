"""The git side of changes and hand-off, on real repositories: every kind of file change,
narrowing to a path, a bounded diff, the worktree left as it was, and a hand-off's push and
pull-request command (a script standing in for `gh`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from activities.changes import (
    GitRefused,
    NothingToHandOff,
    hand_off,
    read_changes,
    scrub,
)
from activities.worktree import WorktreeError, ensure_worktree
from commands.review import diff_lines
from tests.support.git import commit_all, make_repo, run as git, with_remote


@pytest.fixture
async def wt(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "repo", {"a.txt": "1\n2\n3\n", "old.txt": "x\n" * 20,
                                         "gone.txt": "bye\n", "img.bin": "\0\1\2"})
    path = tmp_path / "wt"
    await ensure_worktree(repo, path, "semo/o/BE-1")
    return repo, path


async def test_every_kind_of_change_is_listed_and_the_worktree_is_left_alone(wt) -> None:
    repo, path = wt
    (path / "a.txt").write_text("1\ntwo\n3\n")
    (path / "old.txt").rename(path / "new.txt")
    (path / "gone.txt").unlink()
    (path / "img.bin").write_bytes(b"\0\3\4\5")
    (path / "fresh.txt").write_text("new\n")
    (path / ".claude").mkdir()
    (path / ".claude" / "CLAUDE.md").write_text("persona\n")
    status_before = git("status", "--porcelain", cwd=path)

    got = await read_changes(repo, path, max_diff_bytes=100_000)
    files = {f.path: f for f in got.files}
    assert set(files) == {"a.txt", "new.txt", "gone.txt", "img.bin", "fresh.txt"}
    assert (files["a.txt"].status, files["a.txt"].additions, files["a.txt"].deletions) == \
        ("modified", 1, 1)
    assert (files["new.txt"].status, files["new.txt"].old_path) == ("renamed", "old.txt")
    assert files["gone.txt"].status == "deleted" and files["gone.txt"].deletions == 1
    assert files["img.bin"].binary and files["fresh.txt"].status == "added"
    assert git("status", "--porcelain", cwd=path) == status_before, "nothing was staged"

    new, old = diff_lines((await read_changes(repo, path, only="a.txt",
                                              max_diff_bytes=100_000)).diff)
    assert new == {1: "1", 2: "two", 3: "3"} and old == {1: "1", 2: "2", 3: "3"}


async def test_commits_are_listed_and_the_diff_is_bounded(wt) -> None:
    repo, path = wt
    (path / "big.txt").write_text("".join(f"line {i}\n" for i in range(5000)))
    commit_all(path, "a big file")
    got = await read_changes(repo, path, max_diff_bytes=2048)
    assert [c.subject for c in got.commits] == ["a big file"] and got.head == got.commits[0].sha
    assert got.truncated and len(got.diff.encode()) <= 2048 and got.diff.endswith("\n")
    assert got.files[0].additions == 5000, "the counts are whole even when the diff is cut"


async def test_a_hand_off_commits_pushes_and_opens_a_pull_request(wt, tmp_path: Path) -> None:
    repo, path = wt
    remote = with_remote(repo, tmp_path / "remote.git")
    gh = tmp_path / "fake-gh"
    gh.write_text("#!/bin/sh\necho \"branch=$2\" > \"$3\"\n"
                  "echo 'Creating pull request'\necho https://github.com/o/r/pull/7\n")
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    (path / "a.txt").write_text("changed\n")
    args = tmp_path / "args.txt"
    res = await hand_off(repo, path, message="Change a", push=True, pull_request=True,
                         pull_request_command=f"{gh} pr {{branch}} {args}")
    assert res.pushed and res.remote == "origin" and res.branch == "semo/o/BE-1"
    assert res.pull_request_url == "https://github.com/o/r/pull/7"
    assert args.read_text() == "branch=semo/o/BE-1\n", "{branch} filled in, no shell"
    assert git("rev-parse", "refs/heads/semo/o/BE-1", cwd=remote) == res.commit
    assert git("status", "--porcelain", cwd=path) == ""

    again = await hand_off(repo, path, message="unused", push=True, pull_request=False,
                           pull_request_command=None)
    assert again.commit == res.commit, "handing off again pushes the same commit"


async def test_a_hand_off_refuses_clearly(wt, tmp_path: Path) -> None:
    repo, path = wt
    with pytest.raises(NothingToHandOff, match="nothing to hand off"):
        await hand_off(repo, path, message="m", push=False, pull_request=False,
                       pull_request_command=None)
    (path / "a.txt").write_text("changed\n")
    with pytest.raises(WorktreeError, match="no remote"):
        await hand_off(repo, path, message="m", push=True, pull_request=False,
                       pull_request_command=None)
    with pytest.raises(WorktreeError, match="SEMO_PULL_REQUEST_COMMAND"):
        await hand_off(repo, path, message="m", push=True, pull_request=True,
                       pull_request_command=None)
    assert git("status", "--porcelain", cwd=path) == "M a.txt", "nothing was committed"

    git("remote", "add", "origin", str(tmp_path / "missing.git"), cwd=repo)
    with pytest.raises(GitRefused, match="git push to origin failed") as missing:
        await hand_off(repo, path, message="m", push=True, pull_request=False,
                       pull_request_command=None)
    assert not missing.value.final, "a remote that is not there may be back: tried again"


async def test_a_rejected_push_is_final(wt, tmp_path: Path) -> None:
    repo, path = wt
    remote = with_remote(repo, tmp_path / "remote.git")
    other = tmp_path / "other"
    git("clone", "-q", str(remote), str(other), cwd=tmp_path)
    (other / "theirs.txt").write_text("someone else's\n")
    commit_all(other, "theirs")
    git("push", "-q", "origin", "HEAD:refs/heads/semo/o/BE-1", cwd=other)
    (path / "a.txt").write_text("mine\n")
    with pytest.raises(GitRefused, match="rejected") as rejected:
        await hand_off(repo, path, message="mine", push=True, pull_request=False,
                       pull_request_command=None)
    assert rejected.value.final, "trying again cannot help"
    assert git("log", "-1", "--format=%s", "semo/o/BE-1", cwd=remote) == "theirs"


def test_credentials_in_git_messages_stay_on_the_machine() -> None:
    said = "fatal: unable to access 'https://bob:ghp_secret@github.com/o/r.git/': 403"
    assert scrub(said) == "fatal: unable to access 'https://github.com/o/r.git/': 403"
    assert "ghp_secret" not in scrub(os.linesep.join([said, said]))
