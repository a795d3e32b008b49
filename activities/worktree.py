"""Git worktrees: one per session when its office names a repository.

The session's working directory (already resolved inside the workspace roots) becomes a
`git worktree` of the office's repository on branch `semo/{office_id}/{role}-{short id}`.
A restart finds the worktree already there and reuses it, work and all. Removing a worktree
is a separate, explicit step (`remove_worktree`): the work in it is the user's.

Which repositories: the repository path is resolved (symlinks followed) and must lie inside
the machine's workspace roots or one of its `repository_roots` (SEMO_REPOSITORY_ROOTS), so the
server cannot make this machine touch any other git repository.

git runs as an asyncio subprocess with a timeout (killed when it is exceeded), never asking
for anything on a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from activities.workspace import is_within

GIT_TIMEOUT_S = 60.0
#: how long a killed git is waited for before giving up on reaping it here (the child watcher
#: still reaps it)
KILL_WAIT_S = 5.0
#: files semo writes into a worktree that belong to no commit
LOCAL_FILES = (".claude/settings.local.json",)
_REF_BAD = re.compile(r"[^A-Za-z0-9._-]+")


class WorktreeError(Exception):
    """The worktree could not be made or used (the message says why)."""


@dataclass(frozen=True)
class Worktree:
    repository: Path
    path: Path
    branch: str
    created: bool


def branch_name(office_id: str, role: str, session_id: str) -> str:
    """`semo/{office_id}/{role}-{short id}`, made a valid git branch name."""
    short = session_id
    prefix = f"{role.lower()}-"
    if short.lower().startswith(prefix):
        short = short[len(prefix):]
    parts = [_ref_part(office_id), f"{_ref_part(role)}-{_ref_part(short)[:12]}"]
    return "semo/" + "/".join(parts)


def _ref_part(text: str) -> str:
    part = _REF_BAD.sub("-", text)
    part = re.sub(r"\.{2,}", ".", part).strip(".-")
    while part.endswith(".lock"):
        part = part[: -len(".lock")].rstrip(".-")
    return part or "x"


async def git(*args: str, cwd: Path | None = None, timeout_s: float = GIT_TIMEOUT_S,
              check: bool = True) -> tuple[int, str, str]:
    """Run git; (exit code, stdout, stderr). Raises WorktreeError on timeout, or on a
    non-zero exit when `check`."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"}
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"):
        env.pop(var, None)  # the worker's own git context must not leak in
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=str(cwd) if cwd else None, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise WorktreeError("git is not installed on this machine") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        _kill_group(proc)
        # SIGKILLed, so it ends at once; bounded all the same (on 3.11, wait() also waits for
        # the pipes to close, and nothing here may hang a worker)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), KILL_WAIT_S)
        raise WorktreeError(f"git {' '.join(args[:2])} took longer than {timeout_s:g}s") from None
    except asyncio.CancelledError:
        _kill_group(proc)
        raise
    code = proc.returncode or 0
    stdout, stderr = out.decode(errors="replace").strip(), err.decode(errors="replace").strip()
    if check and code != 0:
        raise WorktreeError(f"git {' '.join(args)} failed: {stderr or stdout or f'exit {code}'}")
    return code, stdout, stderr


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL git and whatever it started (it leads its own session); it may be gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def check_repository(repository: str, workspace_roots: list[Path],
                     repository_roots: list[Path]) -> Path:
    """The repository's real path, refused unless it is inside an allowed root."""
    if "\x00" in repository:
        raise WorktreeError("repository contains a NUL byte")
    path = Path(os.path.expanduser(repository))
    if not path.is_absolute():
        raise WorktreeError(f"repository {repository!r} must be an absolute path")
    real = path.resolve()
    allowed = [r.resolve() for r in [*workspace_roots, *repository_roots]]
    if not is_within(real, allowed):
        raise WorktreeError(
            f"repository {repository!r} resolves to {real}, outside this machine's workspace "
            f"roots and repository roots ({', '.join(map(str, allowed))}); add it to "
            "SEMO_REPOSITORY_ROOTS on that machine")
    if not real.is_dir():
        raise WorktreeError(f"repository {real} is not a directory")
    return real


async def _common_dir(path: Path, timeout_s: float = GIT_TIMEOUT_S) -> Path | None:
    code, out, _ = await git("rev-parse", "--git-common-dir", cwd=path, check=False,
                             timeout_s=timeout_s)
    return (path / out).resolve() if code == 0 and out else None  # relative to `path`


async def ensure_worktree(repository: Path, path: Path, branch: str, *,
                          timeout_s: float = GIT_TIMEOUT_S) -> Worktree:
    """Make `path` a worktree of `repository` on `branch` (new from HEAD if it does not
    exist), or reuse it when it already is one."""
    common = await _common_dir(repository, timeout_s)
    if common is None:
        raise WorktreeError(f"{repository} is not a git repository")
    if path.exists() and any(path.iterdir()):
        mine = await _common_dir(path, timeout_s)
        _, top, _ = await git("rev-parse", "--show-toplevel", cwd=path, check=False,
                              timeout_s=timeout_s)
        if mine == common and top and Path(top).resolve() == path.resolve():
            return Worktree(repository, path, await _current_branch(path) or branch, created=False)
        raise WorktreeError(f"{path} exists, is not empty and is not a worktree of {repository}")
    # a worktree deleted by hand is still registered: forget it, so its path and branch
    # can be used again
    await git("worktree", "prune", cwd=repository, timeout_s=timeout_s)
    code, _, _ = await git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}",
                           cwd=repository, check=False, timeout_s=timeout_s)
    if code == 0:
        args = ["worktree", "add", str(path), branch]
    else:
        code, _, _ = await git("rev-parse", "--verify", "--quiet", "HEAD^{commit}",
                               cwd=repository, check=False, timeout_s=timeout_s)
        if code != 0:
            raise WorktreeError(f"repository {repository} has no commits yet; commit once first")
        args = ["worktree", "add", "-b", branch, str(path), "HEAD"]
    await git(*args, cwd=repository, timeout_s=timeout_s)
    await _keep_local_files_out(path, common, timeout_s)
    return Worktree(repository, path, branch, created=True)


async def _current_branch(path: Path) -> str | None:
    code, out, _ = await git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=path, check=False)
    return out if code == 0 else None


async def _keep_local_files_out(path: Path, common: Path, timeout_s: float) -> None:
    """The hook settings semo writes are machine-local: keep them out of `git add -A`. A
    tracked `.claude/CLAUDE.md` gets the persona block in this worktree only: mark it
    skip-worktree here (the index is per worktree), so the agent does not commit it."""
    exclude = common / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    have = exclude.read_text(errors="replace").splitlines() if exclude.exists() else []
    missing = [f"/{f}" for f in LOCAL_FILES if f"/{f}" not in have]
    if missing:
        with exclude.open("a") as f:
            if have and have[-1] != "":
                f.write("\n")
            f.write("# semo-sessions: machine-local Claude Code settings\n")
            f.write("".join(m + "\n" for m in missing))
    code, _, _ = await git("ls-files", "--error-unmatch", ".claude/CLAUDE.md", cwd=path,
                           check=False, timeout_s=timeout_s)
    if code == 0:
        await git("update-index", "--skip-worktree", ".claude/CLAUDE.md", cwd=path,
                  timeout_s=timeout_s)


async def remove_worktree(repository: Path, path: Path, *, force: bool = False,
                          timeout_s: float = GIT_TIMEOUT_S) -> bool:
    """Remove the worktree at `path` (its branch stays). Without `force`, a worktree with
    uncommitted changes is kept and False returned."""
    if not path.exists():
        await git("worktree", "prune", cwd=repository, check=False, timeout_s=timeout_s)
        return True
    if not force:
        # our own files do not count as the user's changes
        _, status, _ = await git("status", "--porcelain", "--untracked-files=normal", cwd=path,
                                 timeout_s=timeout_s)
        changes = [line for line in status.splitlines() if not line[3:].startswith(".claude/")]
        if changes:
            return False
    await git("worktree", "remove", "--force", str(path), cwd=repository, timeout_s=timeout_s)
    return True


async def session_worktree(repository: str, working_dir: Path, *, office_id: str, role: str,
                           session_id: str, workspace_roots: list[Path],
                           repository_roots: list[Path]) -> Worktree:
    """The session's worktree at `working_dir` (inside the workspace roots), made or reused."""
    repo = check_repository(repository, workspace_roots, repository_roots)
    return await ensure_worktree(
        repo, working_dir, branch_name(office_id, role or "agent", session_id)
    )
