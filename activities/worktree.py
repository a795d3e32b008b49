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
#: every file semo writes into a worktree: none of them is the agent's work
#: (the persona's files: Claude Code's `.claude/CLAUDE.md`, Codex's `AGENTS.md`)
MEMORY_FILES = (".claude/CLAUDE.md", "AGENTS.md")
SEMO_FILES = (*MEMORY_FILES, *LOCAL_FILES)
#: pathspecs that leave semo's own files out of what git shows or adds
NOT_SEMO_FILES = (".", *(f":(exclude,top){f}" for f in SEMO_FILES))
#: where the commit a session's branch started from is kept (`branch.<name>.semobase`)
_BASE_KEY, _BASE_REF_KEY = "semobase", "semobaseref"
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
    parts = [_ref_part(office_id), f"{_ref_part(role)}-{_ref_part(_ref_part(short)[:12])}"]
    return "semo/" + "/".join(parts)


def _ref_part(text: str) -> str:
    part = _REF_BAD.sub("-", text)
    part = re.sub(r"\.{2,}", ".", part).strip(".-")
    while part.endswith(".lock"):
        part = part[: -len(".lock")].rstrip(".-")
    return part or "x"


async def git(*args: str, cwd: Path | None = None, timeout_s: float = GIT_TIMEOUT_S,
              check: bool = True, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run git; (exit code, stdout, stderr). Raises WorktreeError on timeout, or on a
    non-zero exit when `check`. `env` adds to git's environment (a temporary index)."""
    proc = await _spawn_git(args, cwd, env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        await _stop(proc)
        raise WorktreeError(f"git {' '.join(args[:2])} took longer than {timeout_s:g}s") from None
    except asyncio.CancelledError:
        _kill_group(proc)
        raise
    code = proc.returncode or 0
    stdout, stderr = out.decode(errors="replace").strip(), err.decode(errors="replace").strip()
    if check and code != 0:
        raise WorktreeError(f"git {' '.join(args)} failed: {stderr or stdout or f'exit {code}'}")
    return code, stdout, stderr


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """git's environment: never a prompt or a pager, and none of the worker's own git context."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"}
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"):
        env.pop(var, None)  # the worker's own git context must not leak in
    return {**env, **(extra or {})}


async def _spawn_git(args: tuple[str, ...], cwd: Path | None,
                     env: dict[str, str] | None) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            "git", *args, cwd=str(cwd) if cwd else None, env=git_env(env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise WorktreeError("git is not installed on this machine") from None


async def git_head(*args: str, cwd: Path, max_bytes: int, timeout_s: float = GIT_TIMEOUT_S,
                   env: dict[str, str] | None = None) -> tuple[str, bool]:
    """The first `max_bytes` of git's output, cut at a line's end, and whether it was cut (git
    is stopped there: a huge diff is never read whole)."""
    proc = await _spawn_git(args, cwd, env)
    assert proc.stdout is not None and proc.stderr is not None
    out = bytearray()

    async def read() -> bool:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            out.extend(chunk)
            if len(out) > max_bytes:
                return True
        return False

    try:
        cut = await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        await _stop(proc)
        raise WorktreeError(f"git {' '.join(args[:2])} took longer than {timeout_s:g}s") from None
    except asyncio.CancelledError:
        _kill_group(proc)
        raise
    if cut:
        await _stop(proc)
        end = out.rfind(b"\n", 0, max_bytes + 1)
        return out[: end + 1 if end >= 0 else 0].decode(errors="replace"), True
    err = await proc.stderr.read()
    code = await proc.wait()
    if code != 0:
        raise WorktreeError(f"git {' '.join(args[:2])} failed: "
                            f"{err.decode(errors='replace').strip() or f'exit {code}'}")
    return out.decode(errors="replace"), False


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL git; it ends at once, but the wait is bounded all the same (on 3.11, wait()
    also waits for the pipes to close, and nothing here may hang a worker)."""
    _kill_group(proc)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_WAIT_S)


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


async def common_dir(path: Path, timeout_s: float = GIT_TIMEOUT_S) -> Path | None:
    code, out, _ = await git("rev-parse", "--git-common-dir", cwd=path, check=False,
                             timeout_s=timeout_s)
    return (path / out).resolve() if code == 0 and out else None  # relative to `path`


async def ensure_worktree(repository: Path, path: Path, branch: str, *,
                          timeout_s: float = GIT_TIMEOUT_S) -> Worktree:
    """Make `path` a worktree of `repository` on `branch` (new from HEAD if it does not
    exist), or reuse it when it already is one."""
    common = await common_dir(repository, timeout_s)
    if common is None:
        raise WorktreeError(f"{repository} is not a git repository")
    if path.exists() and any(path.iterdir()):
        mine = await common_dir(path, timeout_s)
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
        await _remember_base(repository, branch, timeout_s)
    await git(*args, cwd=repository, timeout_s=timeout_s)
    await _keep_local_files_out(path, common, timeout_s)
    return Worktree(repository, path, branch, created=True)


async def _remember_base(repository: Path, branch: str, timeout_s: float) -> None:
    """Keep the commit (and the branch) a new session branch starts from in the repository's
    config, so `changes` compares with it however far the repository's own branch moves."""
    _, commit, _ = await git("rev-parse", "HEAD^{commit}", cwd=repository, timeout_s=timeout_s)
    ref = await _current_branch(repository) or commit
    await git("config", f"branch.{branch}.{_BASE_KEY}", commit, cwd=repository,
              timeout_s=timeout_s)
    await git("config", f"branch.{branch}.{_BASE_REF_KEY}", ref, cwd=repository,
              timeout_s=timeout_s)


async def branch_base(repository: Path, path: Path, branch: str, *,
                      timeout_s: float = GIT_TIMEOUT_S) -> tuple[str, str]:
    """(ref, commit) the session's branch started from: as recorded when it was made, or, for
    a branch made before that was recorded, where it meets the repository's checked-out
    branch."""
    _, commit, _ = await git("config", "--get", f"branch.{branch}.{_BASE_KEY}", cwd=path,
                             check=False, timeout_s=timeout_s)
    _, ref, _ = await git("config", "--get", f"branch.{branch}.{_BASE_REF_KEY}", cwd=path,
                          check=False, timeout_s=timeout_s)
    if commit:
        return ref or commit, commit
    ref = await _current_branch(repository) or "HEAD"
    _, start, _ = await git("rev-parse", "HEAD^{commit}", cwd=repository, timeout_s=timeout_s)
    code, commit, _ = await git("merge-base", "HEAD", start, cwd=path, check=False,
                                timeout_s=timeout_s)
    if code != 0 or not commit:  # unrelated histories: everything on the branch is its work
        _, commit, _ = await git("rev-parse", "HEAD^{commit}", cwd=path, timeout_s=timeout_s)
    return ref, commit


async def unsaved_work(repository: Path, path: Path, *,
                       timeout_s: float = GIT_TIMEOUT_S) -> str | None:
    """What in the worktree would be lost with it (None: nothing): changes not committed
    (semo's own files aside), or commits of its branch that no remote has."""
    _, status, _ = await git("status", "--porcelain", "--untracked-files=normal", "--",
                             *NOT_SEMO_FILES, cwd=path, timeout_s=timeout_s)
    if status:
        return f"{len(status.splitlines())} uncommitted change(s)"
    branch = await _current_branch(path)
    _, base = await branch_base(repository, path, branch, timeout_s=timeout_s) \
        if branch else ("", "")
    _, count, _ = await git("rev-list", "--count", "HEAD", "--not", "--remotes",
                            *([base] if base else []), cwd=path, timeout_s=timeout_s)
    if count and count != "0":
        return f"{count} commit(s) on no remote"
    return None


async def _current_branch(path: Path) -> str | None:
    code, out, _ = await git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=path, check=False)
    return out if code == 0 else None


async def _keep_local_files_out(path: Path, common: Path, timeout_s: float) -> None:
    """The hook settings semo writes are machine-local: keep them out of `git add -A`. A
    tracked `.claude/CLAUDE.md` gets the persona block in this worktree only: mark it
    skip-worktree here (the index is per worktree), so the agent does not commit it; so does
    a tracked `AGENTS.md` (Codex's)."""
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
    for memory in MEMORY_FILES:
        code, _, _ = await git("ls-files", "--error-unmatch", memory, cwd=path,
                               check=False, timeout_s=timeout_s)
        if code == 0:
            await git("update-index", "--skip-worktree", memory, cwd=path, timeout_s=timeout_s)


async def remove_worktree(repository: Path, path: Path, *, force: bool = False,
                          timeout_s: float = GIT_TIMEOUT_S) -> bool:
    """Remove the worktree at `path` (its branch stays). Without `force`, a worktree with
    uncommitted changes or commits on no remote is kept and False returned."""
    if not path.exists():
        await git("worktree", "prune", cwd=repository, check=False, timeout_s=timeout_s)
        return True
    if not force and await unsaved_work(repository, path, timeout_s=timeout_s) is not None:
        return False  # our own files do not count as the user's changes
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
