"""Workspace roots: the only directories a client machine lets a session work in.

Enforced on the client (the server cannot override it): paths are resolved, following
symlinks and `..`, before they are compared with the resolved roots.
"""

from __future__ import annotations

import os
from pathlib import Path


class WorkspaceError(ValueError):
    """A working directory outside the machine's workspace roots."""


def is_within(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def resolve_working_dir(requested: str | None, roots: list[Path], office_id: str,
                        session_id: str) -> Path:
    """The real directory for a session, created if missing; refuses anything outside roots.

    No request: a folder of its own, `{first root}/{office_id}/{session_id}`. A relative
    request is taken relative to the first root.
    """
    if not roots:
        raise WorkspaceError(
            "this machine has no workspace roots configured (SEMO_WORKSPACE_ROOTS)"
        )
    roots = [r.resolve() for r in roots]
    if requested is None or requested == "":
        path = roots[0] / office_id / session_id
    else:
        if "\x00" in requested:
            raise WorkspaceError("working_dir contains a NUL byte")
        raw = Path(os.path.expanduser(requested))
        path = raw if raw.is_absolute() else roots[0] / raw
    resolved = path.resolve(strict=False)
    if not is_within(resolved, roots):
        raise WorkspaceError(
            f"working_dir {requested!r} resolves to {resolved}, outside this machine's workspace "
            f"roots ({', '.join(map(str, roots))})")
    if resolved.exists() and not resolved.is_dir():
        raise WorkspaceError(f"working_dir {resolved} exists and is not a directory")
    resolved.mkdir(parents=True, exist_ok=True)
    # created now: check again, in case a component was swapped for a symlink meanwhile
    if not is_within(resolved.resolve(strict=True), roots):
        raise WorkspaceError(f"working_dir {resolved} escaped the workspace roots")
    return resolved
