"""Real git repositories for tests: one with a first commit, and a bare remote it pushes to.
A module of its own so test modules do not import these from each other."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from conftest import MACHINE_ID

IDENTITY = ("-c", "user.name=Tess Ter", "-c", "user.email=tess@example.com")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A repository on branch `main` with one commit of `files`."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for name, text in (files or {"README.md": "hello\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", "-A", cwd=path)
    git(*IDENTITY, "commit", "-q", "-m", "init", cwd=path)
    return path


def with_remote(repo: Path, bare: Path) -> Path:
    """A bare repository as `repo`'s `origin`, holding its `main`."""
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=repo)
    git("remote", "add", "origin", str(bare), cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    return bare


def commit_all(path: Path, message: str) -> str:
    git("add", "-A", cwd=path)
    git(*IDENTITY, "commit", "-q", "-m", message, cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


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
