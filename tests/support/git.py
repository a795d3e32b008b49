"""Git repositories for tests: one with a first commit, a bare remote it pushes to, and an
office whose sessions work in worktrees of it."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from tests.support.tokens import MACHINE_ID

#: who commits in tests (a machine without a git identity is part of what is tested)
IDENTITY = ("-c", "user.name=Tess Ter", "-c", "user.email=tess@example.com")


def run(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True)
    run("init", "-q", "-b", "main", cwd=path)
    for name, text in (files or {"README.md": "hello\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    run("add", "-A", cwd=path)
    run("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "init", cwd=path)
    return path




def with_remote(repo: Path, bare: Path) -> Path:
    """A bare repository as `repo`'s `origin`, holding its `main`."""
    run("init", "-q", "--bare", "-b", "main", str(bare), cwd=repo)
    run("remote", "add", "origin", str(bare), cwd=repo)
    run("push", "-q", "origin", "main", cwd=repo)
    return bare


def commit_all(path: Path, message: str) -> str:
    run("add", "-A", cwd=path)
    run(*IDENTITY, "commit", "-q", "-m", message, cwd=path)
    return run("rev-parse", "HEAD", cwd=path)


async def new_repo_office(http, settings, tmp_path: Path) -> tuple[str, Path, Path]:
    """An office of shell agents whose repository (inside the workspace roots) has a bare
    remote: (office id, repository, remote)."""
    office_id = f"t-{uuid.uuid4().hex[:10]}"
    repo = make_repo(settings.workspace_roots[0].resolve() / "repos" / office_id,
                     {"README.md": "hello\nworld\n", "src/app.py": "print('hi')\n"})
    remote = with_remote(repo, tmp_path / "remote.git")
    r = await http.post("/api/offices", json={"office_id": office_id, "name": "repo office",
                                              "machine_id": MACHINE_ID, "agent": "shell",
                                              "warm_roles": [], "repository": str(repo)})
    assert r.status_code == 201, r.text
    return office_id, repo, remote
