"""Git repositories for tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


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


