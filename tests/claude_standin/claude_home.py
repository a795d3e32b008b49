"""Set up a scratch HOME, environment and hooks so the real Claude Code CLI starts non-interactively.

Verified with Claude Code 2.1.330 (see docs/claude-code.md):

- `~/.claude.json` with `hasCompletedOnboarding` skips the welcome/theme/login
  flow (without it the CLI's onboarding probes api.anthropic.com and stops with
  "Unable to connect to Anthropic services");
- `customApiKeyResponses.approved` holding the last 20 characters of the key
  skips "Detected a custom API key in your environment";
- `projects[<abs path>].hasTrustDialogAccepted` skips the folder-trust dialog;
- `permissions.defaultMode = "default"` in the project's settings turns off
  2.1.330's new default "auto mode", so tool calls ask for permission on screen.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

# Any string works against the stand-in; it only has to look like a key.
STANDIN_API_KEY = "sk-ant-api03-standin-0123456789-abcdefghijklmnopqrstuvwxyz-SEMO"

HOOK_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "Notification",
    "Stop",
    "StopFailure",
    "SessionEnd",
)

# Appends the hook's stdin JSON as one line, plus the cwd the hook ran in.
_RECORD_HOOK = (
    "import json,os,sys\n"
    "raw=sys.stdin.read()\n"
    "try:\n d=json.loads(raw)\n"
    "except ValueError:\n d={'_raw':raw}\n"
    "d['_hook_cwd']=os.getcwd()\n"
    "d['_claude_project_dir']=os.environ.get('CLAUDE_PROJECT_DIR')\n"
    "open(sys.argv[1],'a').write(json.dumps(d)+'\\n')\n"
)


def seed_claude_home(home: Path, trusted_dirs: Iterable[Path], api_key: str = STANDIN_API_KEY) -> dict:
    """Write `home/.claude.json` so the TUI opens straight at the prompt; returns what it wrote."""
    home.mkdir(parents=True, exist_ok=True)
    config = {
        "hasCompletedOnboarding": True,
        "theme": "dark",
        "customApiKeyResponses": {"approved": [api_key.strip()[-20:]], "rejected": []},
        "projects": {
            str(Path(d).resolve()): {"hasTrustDialogAccepted": True, "allowedTools": []} for d in trusted_dirs
        },
    }
    (home / ".claude.json").write_text(json.dumps(config, indent=2))
    return config


def claude_env(home: Path, base_url: str, api_key: str = STANDIN_API_KEY, extra: dict[str, str] | None = None,
               path: str | None = None) -> dict[str, str]:
    """A minimal, explicit environment for the CLI: nothing leaks in from the test runner's env."""
    import os

    env = {
        "HOME": str(home),
        "PATH": path or os.environ.get("PATH", "/usr/bin:/bin"),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        # A 5xx is otherwise retried 10 times with backoff (~3 min) before the error shows.
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    env.update(extra or {})
    return env


def record_hook_command(log_path: Path) -> str:
    """Shell command for a hook that appends its stdin JSON to `log_path` (one line per event)."""
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(_RECORD_HOOK)} {shlex.quote(str(log_path))}"


def write_project_settings(workdir: Path, hook_log: Path, events: Iterable[str] = HOOK_EVENTS,
                           permission_mode: str = "default") -> dict:
    """Write `workdir/.claude/settings.local.json` with a recording hook for each event."""
    command = record_hook_command(hook_log)
    hooks: dict[str, list] = {}
    for event in events:
        entry: dict = {"hooks": [{"type": "command", "command": command, "timeout": 30}]}
        if event in ("PreToolUse", "PostToolUse", "PermissionRequest"):
            entry["matcher"] = "*"
        hooks[event] = [entry]
    settings = {"permissions": {"defaultMode": permission_mode}, "hooks": hooks}
    target = workdir / ".claude" / "settings.local.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(settings, indent=2))
    return settings


def read_hook_events(hook_log: Path) -> list[dict]:
    """Events recorded so far; a line still being written is skipped (hooks run concurrently)."""
    if not hook_log.exists():
        return []
    events = []
    for line in hook_log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def last_assistant_text(transcript_path: Path) -> str | None:
    """Text of the last assistant message in a Claude Code transcript (JSONL), or None."""
    if not transcript_path.exists():
        return None
    last = None
    for line in transcript_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the CLI may be mid-write
        if entry.get("type") != "assistant" or entry.get("isSidechain"):
            continue
        content = (entry.get("message") or {}).get("content") or []
        texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        if texts:
            last = "\n".join(texts)
    return last
