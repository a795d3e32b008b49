"""Install a Codex CLI (npm `@openai/codex`) into a cache outside the repo, for tests.

The npm package is a small Node wrapper whose platform package (an npm alias such as
`@openai/codex-linux-x64`) carries the native Rust binary under
`vendor/<target triple>/bin/codex`; nothing is downloaded from outside the npm registry.
Tests run that binary directly (it is called `codex`, so a profile naming it is a Codex
profile).

    python -m tests.codex_standin.install                   # the pinned version's binary
    python -m tests.codex_standin.install --version latest  # npm's newest

The cache is `$SEMO_CODEX_CACHE/<version>/` (default `~/.cache/semo/codex/<version>/`).
Installing is idempotent, and a new install goes into a temporary sibling directory renamed
into place only once the binary runs, so an interrupted install leaves nothing half-made.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from activities.codex.versions import PINNED

PACKAGE = "@openai/codex"
INSTALL_TIMEOUT_S = 600.0


class CodexInstallError(RuntimeError):
    """The Codex CLI could not be installed or found."""


def pinned_version() -> str:
    return os.environ.get("SEMO_CODEX_VERSION") or PINNED


def cache_root() -> Path:
    env = os.environ.get("SEMO_CODEX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "semo" / "codex"


def _find_binary(prefix: Path) -> Path | None:
    found = sorted((prefix / "node_modules" / "@openai").glob("codex-*/vendor/*/bin/codex"))
    return found[0] if found and found[0].is_file() else None


def _check_runs(binary: Path, version: str) -> None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CodexInstallError(f"{binary} --version failed: {exc}") from exc
    if out.returncode != 0 or version not in out.stdout:
        raise CodexInstallError(f"{binary} --version exited {out.returncode}: "
                                f"{out.stdout.strip()} {out.stderr.strip()}")


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise CodexInstallError("npm is not on PATH; Node.js and npm are needed to install Codex")
    return npm


def resolve(version: str) -> str:
    """A version to install: `latest` (or another dist-tag) is asked of the npm registry."""
    if version[:1].isdigit():
        return version
    try:
        out = subprocess.run([_npm(), "view", f"{PACKAGE}@{version}", "version"],
                             capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise CodexInstallError(f"npm view {PACKAGE}@{version} took longer than 120s") from exc
    found = out.stdout.strip().splitlines()[-1:] if out.returncode == 0 else []
    if not found:
        raise CodexInstallError(f"npm view {PACKAGE}@{version} failed: {out.stderr.strip()}")
    return found[0].strip().strip("'")


def install(version: str | None = None, *, timeout_s: float = INSTALL_TIMEOUT_S) -> Path:
    """Install `version` (default: the pinned one; `latest` asks npm) if needed; return the
    native binary's path."""
    version = resolve(version or pinned_version())
    root = cache_root()
    target = root / version
    found = _find_binary(target)
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    staging.chmod(0o755)
    try:
        cmd = [_npm(), "install", "--prefix", str(staging), "--no-audit", "--no-fund",
               "--no-save", "--loglevel=error", f"{PACKAGE}@{version}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise CodexInstallError(f"npm install {PACKAGE}@{version} took longer than "
                                    f"{timeout_s:.0f}s") from exc
        if proc.returncode != 0:
            raise CodexInstallError(f"npm install {PACKAGE}@{version} exited "
                                    f"{proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        binary = _find_binary(staging)
        if binary is None:
            raise CodexInstallError(f"npm installed {PACKAGE}@{version} but no native binary "
                                    f"is in {staging}")
        _check_runs(binary, version)
        try:
            staging.rename(target)
        except OSError:
            if _find_binary(target) is None:  # another process finished first: use its copy
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    found = _find_binary(target)
    if found is None:  # pragma: no cover - the rename succeeded
        raise CodexInstallError(f"installed {PACKAGE}@{version} but found no binary in {target}")
    return found


def codex_path(version: str | None = None) -> Path:
    return install(version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Install {PACKAGE} for tests; print its path.")
    parser.add_argument("--version", default=None, help=f"npm version (default {pinned_version()})")
    args = parser.parse_args(argv)
    try:
        print(install(args.version))
    except CodexInstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
