"""What a session changed in its worktree, and handing its branch off (SPEC §9), with real git
on the client machine.

`read_changes` compares the worktree, committed and not (untracked files included), with the
commit its branch started from, without touching the worktree's index: it adds everything to
a copy of the index in a temporary folder and diffs that. semo's own files are left out.

`hand_off` commits what is uncommitted, pushes the branch to the repository's remote and, when
asked and this machine is configured for it, runs its pull-request command. git and that
command run with this machine's own credentials; only names go back (the remote's name, never
its URL, and any `user:password@` in git's words is cut out).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import tempfile
from pathlib import Path

from activities.worktree import (
    NOT_SEMO_FILES,
    SEMO_FILES,
    WorktreeError,
    branch_base,
    git,
    git_env,
    git_head,
)
from workflows.change_contracts import (
    BaseCommit,
    ChangeCommit,
    ChangedFile,
    ChangesResult,
    FileStatus,
    HandOffResult,
    path_problem,
)

#: the most commits listed (the newest)
MAX_COMMITS = 500
_STATUS: dict[str, FileStatus] = {"A": "added", "M": "modified", "D": "deleted", "R": "renamed",
                                  "C": "added", "T": "modified"}
_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_URL = re.compile(r"https?://[^\s'\"<>]+")


class NothingToHandOff(WorktreeError):
    """Nothing uncommitted and no commit since the branch started."""


class GitRefused(WorktreeError):
    """git (or the pull-request command) said no; the message is its words, credentials cut.
    `final`: trying again cannot help (the remote rejected the push), as opposed to a failure
    that may pass (the network)."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


def scrub(text: str) -> str:
    """`https://user:token@host/...` → `https://host/...`: a URL's credentials stay here."""
    return _CREDENTIALS.sub(r"\1", text)


def check_path(path: str) -> str:
    """`path` if it names a file of a worktree; ValueError saying why not."""
    problem = path_problem(path)
    if problem:
        raise ValueError(problem)
    return path


async def current_branch(path: Path) -> str:
    code, out, _ = await git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=path, check=False)
    if code != 0 or not out:
        raise WorktreeError(f"{path} is on no branch (a detached HEAD): check out its branch")
    return out


# --- reading -----------------------------------------------------------------------------------


async def read_changes(repository: Path, path: Path, *, only: str | None = None,
                       max_diff_bytes: int, timeout_s: float = 60.0) -> ChangesResult:
    branch = await current_branch(path)
    ref, base = await branch_base(repository, path, branch, timeout_s=timeout_s)
    _, head, _ = await git("rev-parse", "HEAD", cwd=path, timeout_s=timeout_s)
    spec = [f":(top,literal){only}", *NOT_SEMO_FILES[1:]] if only else list(NOT_SEMO_FILES)
    with tempfile.TemporaryDirectory(prefix="semo-changes-") as tmp:
        env = await _scratch_index(path, Path(tmp), timeout_s)
        await git("add", "--all", "--", *NOT_SEMO_FILES, cwd=path, env=env, timeout_s=timeout_s)
        diff = ("diff", "--cached", "-M", "--no-color", "--no-ext-diff")
        _, names, _ = await git(*diff, "--name-status", "-z", base, "--", *spec, cwd=path,
                                env=env, timeout_s=timeout_s)
        _, counts, _ = await git(*diff, "--numstat", "-z", base, "--", *spec, cwd=path,
                                 env=env, timeout_s=timeout_s)
        text, truncated = await git_head(*diff, base, "--", *spec, cwd=path, env=env,
                                         max_bytes=max_diff_bytes, timeout_s=timeout_s)
    files = _files(names, counts)
    commits = await _commits(path, base, spec if only else [], timeout_s)
    return ChangesResult(branch=branch, base=BaseCommit(ref=ref, commit=base), head=head,
                         files=files, commits=commits, diff=text, truncated=truncated)


async def _scratch_index(path: Path, tmp: Path, timeout_s: float) -> dict[str, str]:
    """A copy of the worktree's index to add everything to: the real one is not touched."""
    _, where, _ = await git("rev-parse", "--git-path", "index", cwd=path, timeout_s=timeout_s)
    real = Path(where) if os.path.isabs(where) else path / where
    scratch = tmp / "index"
    if real.exists():
        await asyncio.to_thread(shutil.copyfile, real, scratch)
    return {"GIT_INDEX_FILE": str(scratch)}


def _files(names: str, counts: str) -> list[ChangedFile]:
    """`--name-status -z` and `--numstat -z` of the same diff, as one list."""
    numbers: dict[str, tuple[int, int, bool]] = {}
    fields = counts.split("\0")
    i = 0
    while i < len(fields) and fields[i]:
        added, deleted, name = fields[i].split("\t", 2)
        if name == "":  # a rename: the old and the new path follow
            name = fields[i + 2]
            i += 3
        else:
            i += 1
        binary = added == "-"
        numbers[name] = (0 if binary else int(added), 0 if binary else int(deleted), binary)
    out: list[ChangedFile] = []
    fields = names.split("\0")
    i = 0
    while i < len(fields) and fields[i]:
        code = fields[i][0]
        if code in "RC":
            old, new = fields[i + 1], fields[i + 2]
            i += 3
        else:
            old, new = None, fields[i + 1]
            i += 2
        plus, minus, binary = numbers.get(new, (0, 0, False))
        out.append(ChangedFile(path=new, status=_STATUS.get(code, "modified"),
                               old_path=old if code == "R" else None,
                               additions=plus, deletions=minus, binary=binary))
    return out


async def _commits(path: Path, base: str, spec: list[str], timeout_s: float) -> list[ChangeCommit]:
    _, out, _ = await git("log", f"--max-count={MAX_COMMITS}", "--format=%H%x1f%s%x1f%cI%x1e",
                          f"{base}..HEAD", "--", *spec, cwd=path, timeout_s=timeout_s)
    commits = []
    for record in out.split("\x1e"):
        record = record.strip("\n")
        if record:
            sha, subject, at = record.split("\x1f")
            commits.append(ChangeCommit(sha=sha, subject=subject, at=at))
    return commits


# --- handing off -------------------------------------------------------------------------------


async def hand_off(repository: Path, path: Path, *, message: str, push: bool,
                   pull_request: bool, pull_request_command: str | None,
                   timeout_s: float = 120.0) -> HandOffResult:
    branch = await current_branch(path)
    if pull_request and not pull_request_command:
        raise WorktreeError(
            f"a pull request was asked for, but machine {socket.gethostname()} has no "
            "SEMO_PULL_REQUEST_COMMAND (e.g. `gh pr create --fill --head {branch}`)")
    remote = await _remote(path, branch) if push or pull_request else None
    if (push or pull_request) and remote is None:
        raise WorktreeError(f"repository {repository} has no remote to push {branch} to; add "
                            "one there (`git remote add origin URL`) or hand off with push=false")
    _, base = await branch_base(repository, path, branch, timeout_s=timeout_s)
    await git("add", "--all", "--", *NOT_SEMO_FILES, cwd=path, timeout_s=timeout_s)
    for name in SEMO_FILES:  # a file of ours the agent staged itself stays out as well
        await git("reset", "--quiet", "--", f":(top,literal){name}", cwd=path, check=False,
                  timeout_s=timeout_s)
    staged, _, _ = await git("diff", "--cached", "--quiet", cwd=path, check=False,
                             timeout_s=timeout_s)
    if staged == 1:
        code, out, err = await git(*await _identity(path), "commit", "--quiet", "-m", message,
                                   cwd=path, check=False, timeout_s=timeout_s)
        if code != 0:  # a hook said no, most likely
            raise GitRefused(f"git commit failed: {scrub(err or out)}", final=True)
    _, ahead, _ = await git("rev-list", "--count", f"{base}..HEAD", cwd=path, timeout_s=timeout_s)
    if ahead == "0":
        raise NothingToHandOff(f"branch {branch} has nothing to hand off: no change since "
                               f"{base[:12]}")
    _, commit, _ = await git("rev-parse", "HEAD", cwd=path, timeout_s=timeout_s)
    pushed = False
    if push:
        assert remote is not None
        code, out, err = await git("push", "--porcelain", "--set-upstream", remote,
                                   f"HEAD:refs/heads/{branch}", cwd=path, check=False,
                                   timeout_s=timeout_s)
        if code != 0:
            said = scrub(err or out)
            raise GitRefused(f"git push to {remote} failed: {said}",
                             final="rejected" in said or "non-fast-forward" in said)
        pushed = True
    url = None
    if pull_request:
        assert pull_request_command is not None and remote is not None
        url = await _open_pull_request(path, pull_request_command, branch=branch, base=base,
                                       remote=remote, timeout_s=timeout_s)
    return HandOffResult(branch=branch, commit=commit, pushed=pushed, remote=remote,
                         pull_request_url=url)


async def _remote(path: Path, branch: str) -> str | None:
    """The branch's own remote, else `origin`, else the only one."""
    _, own, _ = await git("config", "--get", f"branch.{branch}.remote", cwd=path, check=False)
    _, listed, _ = await git("remote", cwd=path, check=False)
    remotes = listed.split()
    if own and own in remotes:
        return own
    if "origin" in remotes:
        return "origin"
    return remotes[0] if len(remotes) == 1 else None


async def _identity(path: Path) -> list[str]:
    """Commit as the machine's git user; a machine without one commits as semo."""
    code, _, _ = await git("config", "user.email", cwd=path, check=False)
    if code == 0:
        return []
    return ["-c", "user.name=semo", "-c", f"user.email=semo@{socket.gethostname()}"]


async def _open_pull_request(path: Path, command: str, *, branch: str, base: str, remote: str,
                             timeout_s: float) -> str | None:
    """Run the machine's pull-request command (placeholders {branch}, {base}, {remote} filled
    in each word, never through a shell); the URL it prints is the pull request's."""
    try:
        argv = [word.format(branch=branch, base=base, remote=remote)
                for word in shlex.split(command)]
    except (ValueError, KeyError, IndexError) as bad:
        raise WorktreeError(f"SEMO_PULL_REQUEST_COMMAND cannot be used: {bad}") from None
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=str(path), env=git_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
    except OSError as exc:
        raise GitRefused(f"could not run {argv[0]!r}: {exc}") from None
    try:
        out, errs = await asyncio.wait_for(proc.communicate(), timeout_s)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise GitRefused(f"{argv[0]} took longer than {timeout_s:g}s") from None
    text = out.decode(errors="replace") + "\n" + errs.decode(errors="replace")
    urls = _URL.findall(scrub(text))
    if proc.returncode != 0 and not (urls and "already exists" in text):
        raise GitRefused(f"{argv[0]} failed (exit {proc.returncode}): "
                         f"{scrub(text.strip())[-2000:]}")
    return urls[-1] if urls else None
