"""Claude Code on the client machine: hooks, the screen, start-up dialogs, typing prompts.

Everything here follows what docs/claude-code.md records of Claude Code 2.1.x in a real PTY.

Hooks (deterministic events)
    `merge_settings()` adds our hook entries to the worktree's `.claude/settings.local.json`
    for HOOK_EVENTS, next to whatever the user has there (entries are recognised by HOOK_TAG
    in their command, so a re-merge replaces ours and nothing else), and sets
    `permissions.defaultMode: "default"` unless the user chose a mode (2.1.330 otherwise
    starts in "auto mode", where nothing asks for permission). Each hook runs
    activities/hook_relay.py, which hands the event to this worker's `HookServer` over a
    Unix socket, authenticated with a per-session secret that reaches the agent through its
    environment only (never workflow history or the database).

What counts (for profiles with `hooks`, the PTY regexes do not complete or fail jobs)
    Stop          the final reply (`last_assistant_message`, else the transcript): a
                  `[SEMO:DONE]` line completes the job, a `[SEMO:ERROR] reason` line fails
                  it, a GitHub PR URL completes it (`pr_created`); otherwise `turn_end`
                  (the job goes on: the agent may be asking something).
    StopFailure   fails the job with the API error Claude Code showed.
    SessionEnd    / the process exiting while a job runs: fails the job.
    Screen        a dialog (a `❯` option menu over an "Esc to cancel" footer) shown for
                  DIALOG_REPORT_S is `waiting_input` with its text; the Notification hook
                  (~6 s later) only speaks when the screen did not.

Typing (`ClaudeDriver.submit`)
    Wait for the input box; clear what an interrupted turn left in it (Esc Esc); bracketed
    paste; wait until the box shows the text; Enter; confirm (UserPromptSubmit hook, the
    box emptied, or the turn running), else one more Enter.

Keys for a dialog are held until KEY_SETTLE_S after it was drawn: Claude Code drops keys
that arrive within ~0.1 s of drawing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shlex
import stat
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyte

from activities.monitor import markers
from activities.output_monitor import MonitorEvent
from activities.persona import atomic_write, checked_target
from activities.session_manager import SessionManager, Terminal, TerminalError
from semo import permission_rules
from semo.settings import AgentProfile, Settings, StartupDialogs

log = logging.getLogger(__name__)

HOOK_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "Notification",
    "Stop",
    "StopFailure",
    "SessionEnd",
)
#: tool matchers of the hooks that take one (PreToolUse: only the tools that ask a person)
HOOK_MATCHERS = {"PermissionRequest": "*", "PreToolUse": "AskUserQuestion|ExitPlanMode"}
#: dialogs a profile's `dialogs` policy answers, whenever they show
POLICY_DIALOGS = ("trust_folder", "api_key")
#: in every hook command we write: how our entries are told from the user's
HOOK_TAG = "semo-sessions hook"
HOOK_TIMEOUT_S = 30
#: events whose hook may wait for a person's decision (it holds the relay)
DECISION_EVENTS = ("PermissionRequest", "PreToolUse")
#: tools whose PreToolUse waits for a person: a question, a plan to approve
ASKING_TOOLS = {"AskUserQuestion": "question", "ExitPlanMode": "plan"}
#: default of how long a held hook waits for a decision (settings.hook_decision_wait_s)
DECISION_WAIT_S = 600.0
SETTINGS_LOCAL = Path(".claude") / "settings.local.json"
RELAY = Path(__file__).with_name("hook_relay.py")

POLL_S = 0.05
#: a quiet screen without a dialog is looked at again after this long even without output
IDLE_WAKE_S = 1.0
#: a dialog on screen this long is reported as waiting_input
DIALOG_REPORT_S = 0.3
#: keys reach a dialog no sooner than this after it was drawn (earlier ones are dropped)
KEY_SETTLE_S = 0.5
#: the input box up this long without the SessionStart hook counts as ready (hooks that do
#: not fire: a relay that cannot reach the worker); the hook normally comes first
SESSION_START_GRACE_S = 5.0
#: a waiting_input the hooks reported makes the screen's report of the same dialog redundant
HOOK_REPORT_COVERS_S = 30.0
#: bytes of a tool's input an event carries
MAX_TOOL_INPUT = 4000
#: a dialog off screen this long is gone (not a redraw)
DIALOG_GONE_S = 0.25
#: after keys, a dialog still on screen this long is asked again
REASK_AFTER_KEYS_S = 1.5
#: how long a prompt may wait for the input box (the send_input activity allows 30 s)
SUBMIT_READY_TIMEOUT_S = 15.0
ECHO_TIMEOUT_S = 5.0
CONFIRM_S = 3.0
#: characters of reply or question text an event carries (events go into workflow history)
MAX_TEXT = 2000
MAX_LINE_BYTES = 16 * 1024 * 1024
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
BUSY_MARK = "esc to interrupt"
#: what the input box shows when empty after an error (typing replaces it)
PLACEHOLDERS = ("Resend your message to try again", "Once fixed, resend your message")

_OPTION_NUMBER_RE = re.compile(r"^\d+[.)]\s+")
_FOOTER_RE = re.compile(r"\b(?:esc to cancel|enter to (?:confirm|select|continue))\b", re.I)

SignalFn = Callable[[Terminal, MonitorEvent], Awaitable[None]]
#: the office's policy for a session: {"permission_rules": ..., "input_timeout_s": ...}
PolicyFn = Callable[[], Awaitable[dict[str, Any]]]


class DialogOpen(TerminalError):
    """A prompt arrived while Claude Code shows a dialog no policy answers: it is not typed."""

    def __init__(self, dialog: Dialog) -> None:
        super().__init__(f"Claude Code shows a dialog ({dialog.kind()}): {dialog.question!r} "
                         f"(options: {', '.join(dialog.options)}); answer it first "
                         "(POST .../keys), then send the prompt")
        self.dialog = dialog


class ClaudeSetupError(Exception):
    """The worktree's Claude Code settings cannot be merged (the message says why)."""


class StartupError(Exception):
    """Claude Code did not reach its input box. `permanent`: retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# --- settings.local.json -----------------------------------------------------------------------


def hook_command() -> str:
    """The shell command of our hooks: this worker's Python running the relay, tagged."""
    return (f"{shlex.quote(sys.executable)} -I -S {shlex.quote(str(RELAY.resolve()))}"
            f" # {HOOK_TAG}")


def _ours(hook: Any) -> bool:
    return isinstance(hook, dict) and HOOK_TAG in str(hook.get("command", ""))


def merge_hooks(settings: dict, command: str, decision_wait_s: float = DECISION_WAIT_S) -> dict:
    """`settings` with our hook entries (re)placed and a permission mode, the rest untouched.
    Hooks that may wait for a decision get a timeout past `decision_wait_s`.

    Idempotent: merging twice gives what merging once gave."""
    if settings.get("disableAllHooks") is True:
        raise ClaudeSetupError("it sets disableAllHooks: semo needs Claude Code's hooks to see "
                               "when a task ends; remove that setting")
    out = copy.deepcopy(settings)
    hooks = out.get("hooks", {})
    if not isinstance(hooks, dict):
        raise ClaudeSetupError("its 'hooks' is not an object")
    merged: dict[str, Any] = {}
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            if event in HOOK_EVENTS:
                raise ClaudeSetupError(f"its hooks.{event} is not a list")
            merged[event] = groups
            continue
        kept = []
        for group in groups:
            inner = group.get("hooks") if isinstance(group, dict) else None
            if isinstance(inner, list) and any(_ours(h) for h in inner):
                mine_removed = [h for h in inner if not _ours(h)]
                if not mine_removed:
                    continue
                group = {**group, "hooks": mine_removed}
            kept.append(group)
        if kept or event in HOOK_EVENTS:
            merged[event] = kept
    for event in HOOK_EVENTS:
        timeout = int(decision_wait_s) + 60 if event in DECISION_EVENTS else HOOK_TIMEOUT_S
        entry: dict[str, Any] = {"hooks": [{"type": "command", "command": command,
                                            "timeout": timeout}]}
        if event in HOOK_MATCHERS:
            entry = {"matcher": HOOK_MATCHERS[event], **entry}
        merged.setdefault(event, []).append(entry)
    out["hooks"] = merged
    permissions = out.setdefault("permissions", {})
    if not isinstance(permissions, dict):
        raise ClaudeSetupError("its 'permissions' is not an object")
    permissions.setdefault("defaultMode", "default")
    return out


def merge_settings(working_dir: Path, roots: list[Path], command: str | None = None,
                   decision_wait_s: float = DECISION_WAIT_S) -> Path:
    """Merge our hooks into `working_dir/.claude/settings.local.json` (atomic write)."""
    try:
        target = checked_target(working_dir, SETTINGS_LOCAL, roots)
    except ValueError as err:
        raise ClaudeSetupError(str(err)) from None
    existing: dict = {}
    mode = 0o600
    if target.exists():
        raw = target.read_bytes()
        mode = stat.S_IMODE(target.stat().st_mode)
        if raw.strip():
            try:
                existing = json.loads(raw)
            except ValueError as err:
                raise ClaudeSetupError(
                    f"{target} is not valid JSON ({err}); fix or remove it"
                ) from None
            if not isinstance(existing, dict):
                raise ClaudeSetupError(f"{target} does not hold a JSON object")
    try:
        merged = merge_hooks(existing, command or hook_command(), decision_wait_s)
    except ClaudeSetupError as err:
        raise ClaudeSetupError(f"{target}: {err}") from None
    if merged != existing or not target.exists():
        atomic_write(target, (json.dumps(merged, indent=2, ensure_ascii=False) + "\n").encode(),
                     mode)
    return target


# --- what a reply means ------------------------------------------------------------------------


def _clip(text: str, n: int = MAX_TEXT) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def reply_outcome(text: str) -> tuple[str, dict[str, Any]]:
    """(kind, data) for the agent's final reply: completion, error or turn_end.

    A marker counts on a line of its own (markdown emphasis or a bullet around it allowed);
    the last marker line wins. An error marker beats a PR URL; a PR URL completes with
    kind `pr_created`."""
    last: tuple[str, str, str | None] | None = None
    for line in text.splitlines():
        if markers.CLAUDE_DONE_RE.match(line):
            last = ("done", line.strip(), None)
        elif (m := markers.CLAUDE_ERROR_RE.match(line)) is not None:
            last = ("error", line.strip(), (m.group("reason") or "").strip())
    urls = markers.PR_URL_RE.findall(text)
    if last is not None and last[0] == "error":
        return "error", {"kind": "marker", "reason": _clip(last[2] or "the agent gave up"),
                         "text": _clip(last[1])}
    if urls:
        return "completion", {"kind": "pr_created", "url": urls[-1], "marker": last is not None}
    if last is not None:
        return "completion", {"kind": "marker", "text": _clip(last[1])}
    return "turn_end", {"message": _clip(text.strip()[-MAX_TEXT:])}


def last_assistant_text(path: Path, max_bytes: int = 4 * 1024 * 1024) -> str | None:
    """Text of the last main-thread assistant message in a Claude Code transcript (JSONL)."""
    if path.suffix != ".jsonl" or not path.is_file():
        return None
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - max_bytes))
        data = f.read()
    last = None
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # cut at the start of the tail, or being written
        if (
            not isinstance(entry, dict)
            or entry.get("type") != "assistant"
            or entry.get("isSidechain")
        ):
            continue
        content = (entry.get("message") or {}).get("content") or []
        texts = [
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        ]
        if texts:
            last = "\n".join(texts)
    return last


# --- the screen --------------------------------------------------------------------------------


def _is_rule(line: str, chars: str = "─▔") -> bool:
    stripped = line.strip()
    return len(stripped) >= 20 and set(stripped) <= set(chars)


def input_box_row(lines: list[str]) -> int | None:
    """Row of the input box: the last line starting `❯` right under a full-width rule."""
    for i in range(len(lines) - 1, 0, -1):
        if lines[i].startswith("❯") and _is_rule(lines[i - 1], "─"):
            return i
    return None


def input_box(lines: list[str]) -> str | None:
    """The input box's text (lines joined), or None when no input box is shown."""
    row = input_box_row(lines)
    if row is None:
        return None
    box = []
    for line in lines[row:]:
        if _is_rule(line, "─"):
            break
        box.append(line)
    return "\n".join([box[0][1:], *box[1:]]).replace("\xa0", " ").strip()


def _footer(lines: list[str]) -> list[str]:
    return [line for line in lines if line.strip()][-3:]


def is_busy(lines: list[str]) -> bool:
    return any(BUSY_MARK in line.lower() for line in _footer(lines))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


@dataclass(frozen=True)
class Dialog:
    """A menu dialog on screen: its text (title, details, question), options, selection."""

    text: tuple[str, ...]
    options: tuple[str, ...]
    selected: int

    @property
    def question(self) -> str:
        asks = [line for line in self.text if "?" in line]
        return asks[-1] if asks else (self.text[-1] if self.text else "")

    @property
    def key(self) -> tuple:
        return (self.question, self.options)

    def summary(self) -> str:
        return _clip("\n".join(self.text))

    def kind(self) -> str:
        words = " ".join(self.text).lower()
        opts = " ".join(self.options).lower()
        if "trust this folder" in opts or "one you trust" in words or "trust the files" in words:
            return "trust_folder"
        if "api key" in words:
            return "api_key"
        if "do you want to" in words:
            return "permission"
        return "question"


def option_label(option: str) -> str:
    """An option without the number some versions put in front (`1. Yes` -> `Yes`)."""
    return _OPTION_NUMBER_RE.sub("", option.strip())


def policy_option(dialog: Dialog, answer: str) -> int | None:
    """The option that gives a policy's answer ("accept" or "decline"), by its words, not
    its place: versions order and number these menus differently."""
    labels = [option_label(o).lower() for o in dialog.options]
    if answer == "accept":
        tests = (lambda o: o.startswith("yes"), lambda o: "trust" in o and not o.startswith("no"))
    else:
        tests = (lambda o: o.startswith("no"),)  # type: ignore[assignment]
    for test in tests:
        found = next((i for i, label in enumerate(labels) if test(label)), None)
        if found is not None:
            return found
    return None


def bounded_input(value: Any, limit: int = MAX_TOOL_INPUT) -> Any:
    """A tool's input for an event (events go into workflow history): as it is when small,
    else its string values clipped, else a clipped JSON text."""
    if len(json.dumps(value, ensure_ascii=False, default=str)) <= limit:
        return value
    if isinstance(value, dict):
        clipped = {str(k)[:100]: _clip(v, 500) if isinstance(v, str) else v
                   for k, v in list(value.items())[:50]}
        if len(json.dumps(clipped, ensure_ascii=False, default=str)) <= limit:
            return clipped
    return {"_truncated": _clip(json.dumps(value, ensure_ascii=False, default=str), limit)}


def find_dialog(lines: list[str]) -> Dialog | None:
    """The menu dialog at the bottom of the screen, if one is open.

    A dialog ends in a footer ("Esc to cancel", "Enter to confirm"...) among the last
    lines, above which is a menu whose selected option starts with `❯` (not the input box,
    which is a `❯` at column 0 under a rule). Options are the lines aligned with the
    selected option's text; the dialog's text is what is above them, up to its top rule."""
    rows = [i for i, line in enumerate(lines) if line.strip()]
    foot = next((i for i in reversed(rows[-3:]) if _FOOTER_RE.search(lines[i])), None)
    if foot is None:
        return None
    sel = None
    for i in range(foot - 1, max(-1, foot - 40), -1):
        line = lines[i]
        if line.lstrip(" ").startswith("❯"):
            if line.startswith("❯") and i > 0 and _is_rule(lines[i - 1], "─"):
                return None  # the input box: no dialog
            sel = i
            break
    if sel is None:
        return None
    col = _indent(lines[sel]) + 2

    def option_like(i: int) -> bool:
        return bool(lines[i].strip()) and _indent(lines[i]) >= col

    top = sel
    while top - 1 >= 0 and option_like(top - 1):
        top -= 1
    bottom = sel
    while bottom + 1 < foot and (option_like(bottom + 1) or not lines[bottom + 1].strip()):
        bottom += 1
    options: list[str] = []
    selected = 0
    for i in range(top, bottom + 1):
        line = lines[i]
        if not line.strip():
            continue
        label = line.strip().lstrip("❯").strip()
        if i == sel or _indent(line) == col or not options:
            if i == sel:
                selected = len(options)
            options.append(label)
        else:  # a wrapped option: part of the one before
            options[-1] = f"{options[-1]} {label}"
    text: list[str] = []
    for i in range(top - 1, max(-1, top - 30), -1):
        line = lines[i]
        if _is_rule(line):
            break
        stripped = line.strip()
        if not stripped or _is_rule(line, "╌") or stripped.startswith("Tip:"):
            continue
        text.append(stripped)
    text.reverse()
    return Dialog(text=tuple(text[-12:]), options=tuple(options), selected=selected)


# --- the hook server ---------------------------------------------------------------------------


def socket_path(settings: Settings) -> Path:
    """Where this worker listens for hooks: `home/run/` (or SEMO_HOOK_SOCKET_DIR), or a
    private folder under the temp dir when that path is too long for a Unix socket."""
    name = f"hooks-{settings.machine_id[:32]}-{os.getpid()}.sock"
    base = (settings.hook_socket_dir or settings.home / "run").expanduser().resolve()
    if len(os.fsencode(base / name)) <= 100:
        return base / name
    digest = hashlib.sha256(os.fsencode(base)).hexdigest()[:12]
    return (
        Path(tempfile.gettempdir()) / f"semo-{os.getuid()}" / f"hooks-{digest}-{os.getpid()}.sock"
    )


def _private_dir(path: Path) -> None:
    """Create `path` (0700) or check that it is ours and private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(f"{path} is not a directory owned by this user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        path.chmod(0o700)


#: a handler may return a future: the relay then waits for its decision (an output for
#: Claude Code, or None for none) for up to the server's `hold_s`
HookHandler = Callable[[dict], "asyncio.Future[dict | None] | None"]


class HookServer:
    """The Unix socket hook relays talk to; one per client worker.

    A message is one JSON line `{"session_id", "token", "event"}`; it is handed to the
    session's handler only when the token is that session's (constant-time compare)."""

    def __init__(self, path: Path, hold_s: float = 600.0) -> None:
        self.path = path
        self.hold_s = hold_s
        self._routes: dict[str, tuple[str, HookHandler]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._lock = asyncio.Lock()
        self.denied = 0

    async def start(self) -> None:
        async with self._lock:
            if self._server is not None:
                return
            _private_dir(self.path.parent)
            if self.path.exists() or self.path.is_symlink():
                self.path.unlink()  # left by a worker that died; our pid is in the name
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                           limit=MAX_LINE_BYTES)
            self.path.chmod(0o600)
            log.info("Claude Code hooks on %s", self.path)

    def register(self, session_id: str, handler: HookHandler) -> str:
        """A fresh secret for the session (replacing any earlier one); returns it."""
        token = secrets.token_urlsafe(32)
        self._routes[session_id] = (token, handler)
        return token

    def unregister(self, session_id: str, handler: HookHandler | None = None) -> None:
        route = self._routes.get(session_id)
        if route is not None and (handler is None or route[1] == handler):
            del self._routes[session_id]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer = b"denied\n"
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            msg = json.loads(line)
            session_id, token, event = msg["session_id"], msg["token"], msg["event"]
            route = self._routes.get(session_id) if isinstance(session_id, str) else None
            if (route is not None and isinstance(token, str) and isinstance(event, dict)
                    and hmac.compare_digest(token.encode(), route[0].encode())):
                held = route[1](event)
                answer = b"ok\n"
                if held is not None:  # a decision may come: wait for it, bounded
                    try:
                        output = await asyncio.wait_for(held, self.hold_s)
                    except TimeoutError:
                        output = None  # Claude Code shows its own dialog; keys answer it
                    if output:
                        answer = json.dumps({"output": output}).encode() + b"\n"
            else:
                self.denied += 1
                log.warning("hook event for session %r refused: unknown session or wrong secret",
                            str(session_id)[:80])
        except (
            TimeoutError,
            ValueError,
            KeyError,
            TypeError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ) as err:
            log.warning("bad hook message: %s", type(err).__name__)
        except Exception:
            log.exception("hook handler failed")
        try:
            writer.write(answer)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


# --- one Claude Code terminal ------------------------------------------------------------------


@dataclass
class _Held:
    """A hook holding its relay until a person (or a rule, or a timeout) decides."""

    kind: str
    event: dict
    future: asyncio.Future
    options: list[str]


def decision_output(held: _Held, decision: str | None, option: str | None, text: str | None,
                    remember: bool) -> dict[str, Any]:
    """What the held hook prints for Claude Code (its hookSpecificOutput)."""
    event = held.event
    if held.kind == "permission":
        verdict: dict[str, Any] = {"behavior": decision or "deny"}
        if (
            decision == "allow"
            and remember
            and isinstance(event.get("permission_suggestions"), list)
        ):
            verdict["updatedPermissions"] = event["permission_suggestions"]
        if decision != "allow":
            verdict["message"] = text or "Denied through semo."
        return {"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": verdict}}
    if held.kind == "question":
        tool_input = event.get("tool_input") if isinstance(event.get("tool_input"), dict) else {}
        questions = [q for q in tool_input.get("questions") or [] if isinstance(q, dict)]
        first = str(questions[0].get("question")) if questions else ""
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "allow",
                "updatedInput": {
                    **tool_input,
                    "answers": {first: option if option is not None else text},
                },
            }
        }
    out: dict[str, Any] = {"hookEventName": "PreToolUse",
                           "permissionDecision": "allow" if decision == "allow" else "deny"}
    if decision != "allow":
        out["permissionDecisionReason"] = text or "Not approved yet: keep planning."
    return {"hookSpecificOutput": out}


@dataclass
class _Episode:
    """One dialog on screen, from when it was drawn until it is gone."""

    dialog: Dialog
    first_seen: float
    reported: bool = False
    gone_at: float | None = None
    keys_at: float | None = None
    acted_at: float | None = None
    actions: int = 0


class ClaudeDriver:
    """Watches one Claude Code terminal's screen, takes its hook events, types its prompts.

    Events go to `signal(term, event)` in the order they happened, one at a time."""

    def __init__(self, manager: SessionManager, session_id: str, generation: int,
                 profile: AgentProfile, signal: SignalFn, rows: int = 40, cols: int = 120,
                 *, policy: PolicyFn | None = None, working_dir: str | None = None) -> None:
        self.manager = manager
        #: the office's permission rules and input timeout, looked up per request
        self._office_policy = policy
        self.working_dir = working_dir
        #: hooks waiting for a person's decision, by input id
        self._held: dict[str, _Held] = {}
        self.session_id = session_id
        self.generation = generation
        self.policy: StartupDialogs = profile.dialogs
        self._signal = signal
        self.term: Terminal | None = None
        self.screen = pyte.Screen(cols, rows)
        self._stream = pyte.ByteStream(self.screen)
        self._fed = 0
        self._lines: list[str] | None = None  # the screen's lines, until it changes
        #: a job's turn is under way (cleared once its completion or error is sent)
        self.job_open = False
        #: the input box has been shown: start-up is over, dialogs from now on are questions
        self.started = False
        self.session_end: str | None = None
        self.prompt_submitted = asyncio.Event()
        #: the SessionStart hook came: Claude Code has loaded this folder's settings
        self.session_started = asyncio.Event()
        #: why start-up cannot succeed (a dialog the policy fails, or cannot answer)
        self.startup_error: StartupError | None = None
        self._episode: _Episode | None = None
        self._permission: tuple[float, dict] | None = None
        #: when the hooks last reported a waiting_input (the screen need not repeat it)
        self._hook_waiting_at: float | None = None
        #: answering a policy dialog (runs beside the watcher, which feeds the screen)
        self._answering: asyncio.Task | None = None
        self._queue: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = [asyncio.get_running_loop().create_task(self._deliver())]
        self._closed = False
        #: sees every hook event with the job of the turn under way (activities/usage.py)
        self.tap: Callable[[dict, str | None], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def attach(self, term: Terminal) -> None:
        self.term = term
        self._fit(term)
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch()))

    async def close(self) -> None:
        self._closed = True
        self._release_held()
        self._queue.put_nowait(None)
        if self._answering is not None:
            self._answering.cancel()
        for task in self._tasks[1:]:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._tasks[0]), 2)
        except (TimeoutError, asyncio.CancelledError):
            self._tasks[0].cancel()

    # --- the screen ---------------------------------------------------------------------

    def lines(self) -> list[str]:
        """The screen as text lines (rendered once per change: rendering costs ~1.5 ms)."""
        if self._lines is None:
            self._lines = [line.rstrip() for line in self.screen.display]
        return self._lines

    def _fit(self, term: Terminal) -> None:
        if (self.screen.lines, self.screen.columns) != (term.rows, term.cols):
            self.screen.resize(term.rows, term.cols)
            self._lines = None

    def text(self) -> str:
        return "\n".join(line for line in self.lines() if line.strip())

    def _feed(self) -> bool:
        start, data = self.manager.get_output(self.session_id, since=self._fed)
        if not data:
            return False
        if start > self._fed:
            log.debug("%s: %d bytes of output were gone before the screen saw them",
                      self.session_id, start - self._fed)
        self._stream.feed(data)
        self._fed = start + len(data)
        self._lines = None
        return True

    async def _watch(self) -> None:
        """Feed the screen and follow its dialogs: every POLL_S while output comes or a dialog
        is open (how long it has been shown matters), else asleep until the next output."""
        term = self.term
        assert term is not None
        while True:
            term.output.clear()  # before feeding: output handed on after this wakes us
            try:
                self._fit(term)
                changed = self._feed()
            except TerminalError:
                return  # terminated and forgotten by the manager
            now = time.monotonic()
            self._check_dialog(now)
            self._police(now)
            if term.exited.is_set():
                try:
                    self._feed()
                except TerminalError:
                    pass
                self._on_exit()
                return
            if changed or self._episode is not None:
                await asyncio.sleep(POLL_S)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(term.output.wait(), IDLE_WAKE_S)

    def _check_dialog(self, now: float) -> None:
        dialog = find_dialog(self.lines())
        ep = self._episode
        if dialog is None:
            if ep is not None:
                ep.gone_at = ep.gone_at or now
                if now - ep.gone_at >= DIALOG_GONE_S:
                    self._episode = None
            return
        if ep is None or ep.dialog.key != dialog.key:
            self._episode = ep = _Episode(dialog=dialog, first_seen=now)
        ep.dialog, ep.gone_at = dialog, None
        if not self.started or self._policy_answers(dialog):
            return  # start-up dialogs, and those a policy answers: see _police()
        if (not ep.reported and self._hook_waiting_at is not None
                and now - self._hook_waiting_at < HOOK_REPORT_COVERS_S):
            ep.reported = True  # the hooks told already (PermissionRequest, PreToolUse)
        if ep.keys_at is not None:
            if now - ep.keys_at < REASK_AFTER_KEYS_S:
                return
            ep.keys_at, ep.reported = None, False  # answered, yet still asking
        if not ep.reported and now - ep.first_seen >= DIALOG_REPORT_S:
            ep.reported = True
            self._emit("waiting_input", self._dialog_data(dialog, now))

    def _dialog_data(self, dialog: Dialog, now: float) -> dict[str, Any]:
        data: dict[str, Any] = {"question": dialog.summary(), "options": list(dialog.options)[:10],
                                "kind": dialog.kind(), "source": "screen"}
        if self._permission is not None and now - self._permission[0] < 30:
            data.update(self._permission[1])
        return data

    def _policy_answers(self, dialog: Dialog) -> bool:
        kind = dialog.kind()
        return kind in POLICY_DIALOGS and getattr(self.policy, kind) != "fail"

    def _police(self, now: float) -> None:
        """Answer a dialog the profile's policy answers (trust, API key), whenever it shows:
        during start-up or later (some versions draw the input box before the trust dialog).
        During start-up, a dialog no policy answers is a start-up error."""
        ep = self._episode
        if ep is None or ep.gone_at is not None or now - ep.first_seen < KEY_SETTLE_S:
            return
        if self._answering is not None and not self._answering.done():
            return
        kind = ep.dialog.kind()
        if kind not in POLICY_DIALOGS:
            if not self.started and now - ep.first_seen > 3.0 and self.startup_error is None:
                self.startup_error = StartupError(
                    f"Claude Code shows a start-up dialog semo has no policy for: "
                    f"{ep.dialog.summary()!r} (options: {', '.join(ep.dialog.options)})",
                    permanent=True)
            return
        self._answering = asyncio.get_running_loop().create_task(self._answer_policy_dialog(ep))

    async def _answer_policy_dialog(self, ep: _Episode) -> None:
        try:
            await self._answer_startup_dialog(ep, time.monotonic())
        except StartupError as err:
            if not self.started:
                self.startup_error = self.startup_error or err
            elif not ep.reported:  # after start-up: a person decides
                ep.reported = True
                self._emit("waiting_input", {**self._dialog_data(ep.dialog, time.monotonic()),
                                             "kind": "dialog", "reason": str(err)})
        except Exception:
            log.exception("%s: answering a dialog failed", self.session_id)

    def dialog(self) -> Dialog | None:
        """The dialog open now, if any."""
        ep = self._episode
        return ep.dialog if ep is not None and ep.gone_at is None else None

    # --- events -------------------------------------------------------------------------

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for the session's current job (if its turn is open)."""
        term = self.term
        job_id = term.job_id if term is not None and self.job_open else None
        if kind in ("completion", "error"):
            self.job_open = False
            self._hook_waiting_at = None
        if term is not None:  # what the manager's stall check goes by
            if kind in ("completion", "error"):
                term.busy = False
            elif kind == "waiting_input":
                term.waiting = True
        offset = self.term.offset if self.term is not None else 0
        payload = dict(data)
        if job_id is not None:
            payload["job_id"] = job_id
        self._queue.put_nowait(("event", MonitorEvent(kind=kind, data=payload, offset=offset)))

    async def _deliver(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            what, value = item
            try:
                if what == "hook":
                    await self._on_hook(*value)
                elif self.term is not None:
                    await self._signal(self.term, value)
            except Exception:
                log.exception("%s: handling %s failed", self.session_id, what)

    def on_hook(self, event: dict) -> asyncio.Future | None:
        """A hook event from the relay (already authenticated): handled in order. For a
        permission, a question or a plan, a future the relay waits on for the decision."""
        if self.tap is not None:
            self.tap(event, self.term.job_id if self.term is not None and self.job_open else None)
        name = event.get("hook_event_name")
        if name == "UserPromptSubmit":
            self.prompt_submitted.set()  # at once: submit() may be waiting for it
        future = None
        if name == "PermissionRequest" or (name == "PreToolUse"
                                           and event.get("tool_name") in ASKING_TOOLS):
            future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(("hook", (event, future)))
        return future

    async def _on_hook(self, event: dict, future: asyncio.Future | None = None) -> None:
        name = event.get("hook_event_name")
        if name == "SessionStart":
            self.session_started.set()
        elif name == "Stop":
            text = event.get("last_assistant_message")
            if not isinstance(text, str):
                path = event.get("transcript_path")
                text = await asyncio.to_thread(last_assistant_text, Path(path)) \
                    if isinstance(path, str) and path else None
            kind, data = reply_outcome(text or "")
            self._emit(kind, {**data, "source": "hook"})
        elif name == "StopFailure":
            message = str(event.get("last_assistant_message") or "").strip().lstrip("●⏺ ").strip()
            code = str(event.get("error") or "unknown")
            reason = message.splitlines()[0] if message else f"Claude Code stopped: {code}"
            self._emit("error", {"kind": "stop_failure", "error": code, "reason": _clip(reason),
                                 "source": "hook"})
        elif name == "PermissionRequest":
            # the moment Claude Code asks (the Notification hook comes ~6 s later)
            tool, tool_input = str(event.get("tool_name") or "?")[:100], event.get("tool_input")
            detail = tool_input.get("command") if isinstance(tool_input, dict) else None
            if not isinstance(detail, str):
                detail = json.dumps(tool_input, ensure_ascii=False, default=str)
            self._permission = (time.monotonic(), {"tool": tool,
                                                   "input": bounded_input(tool_input)})
            policy = await self._policy()
            ruled = permission_rules.decide(policy.get("permission_rules"), tool, tool_input,
                                            self.working_dir)
            if ruled is not None and future is not None:  # the office's rule answers at once
                decision, rule = ruled
                held = _Held("permission", event, future, [])
                future.set_result(decision_output(
                    held, decision, None, f"Denied by the office rule {rule}.", False))
                self._hook_waiting_at = time.monotonic()  # its dialog, if drawn, is answered
                self._emit("permission_auto", {"tool": tool, "input": bounded_input(tool_input),
                                               "decision": decision, "rule": rule,
                                               "source": "rule"})
                return
            self._hold("permission", event, future, [], policy, {
                "tool": tool, "input": bounded_input(tool_input),
                "question": _clip(f"Claude Code asks to use {tool}: {detail}")})
        elif name == "PreToolUse":
            tool, tool_input = str(event.get("tool_name") or ""), event.get("tool_input")
            if tool == "AskUserQuestion" and isinstance(tool_input, dict):
                questions = [q for q in tool_input.get("questions") or [] if isinstance(q, dict)]
                first = questions[0] if questions else {}
                options = [str(o.get("label") if isinstance(o, dict) else o)[:200]
                           for o in first.get("options") or []][:20]
                self._hold("question", event, future, options, await self._policy(), {
                    "tool": tool, "input": bounded_input(tool_input),
                    "question": _clip(str(first.get("question") or "")), "options": options})
            elif tool == "ExitPlanMode":
                plan = tool_input.get("plan") if isinstance(tool_input, dict) else None
                self._hold("plan", event, future, [], await self._policy(), {
                    "tool": tool, "input": bounded_input(tool_input),
                    "question": _clip(str(plan or "Claude Code has a plan"))})
            elif future is not None:
                future.set_result(None)
        elif name == "Notification":
            ntype = str(event.get("notification_type") or "")
            if ntype not in ("permission_prompt", "elicitation_dialog"):
                return  # idle_prompt: 60 s after a finished turn; not a question
            ep = self._episode
            if self._hook_waiting_at is not None or (ep is not None and ep.reported
                                                     and ep.gone_at is None):
                return  # the screen or an earlier hook has told already
            data = {"question": _clip(str(event.get("message") or "Claude Code needs input")),
                    "kind": "permission" if ntype == "permission_prompt" else "question",
                    "notification_type": ntype, "source": "notification"}
            if self._permission is not None and time.monotonic() - self._permission[0] < 60:
                data.update(self._permission[1])
            self._emit("waiting_input", data)
        elif name == "SessionEnd":
            reason = str(event.get("reason") or "other")
            if reason == "clear":
                return  # /clear: a new conversation in the same process
            self.session_end = reason
            if self.job_open and not self._stopping():
                self._emit("error", {"kind": "exit", "source": "hook", "reason":
                                     f"Claude Code exited mid-job (session end: {reason})"})

    async def _policy(self) -> dict[str, Any]:
        """The office's rules and input timeout (none when they cannot be read)."""
        if self._office_policy is None:
            return {}
        try:
            return await asyncio.wait_for(self._office_policy(), 5) or {}
        except Exception as err:  # no rule applies; a person decides
            log.warning("%s: office policy not read: %s", self.session_id, err)
            return {}

    def _hold(self, kind: str, event: dict, future: asyncio.Future | None, options: list[str],
              policy: dict[str, Any], data: dict[str, Any]) -> None:
        """Report what Claude Code asks, and keep its hook waiting for the answer."""
        input_id = f"in-{secrets.token_hex(8)}"
        if future is not None and not future.done():
            self._held[input_id] = _Held(kind, event, future, options)
        timeout = policy.get("input_timeout_s")
        self._report_waiting({"kind": kind, "input_id": input_id, **data, "source": "hook",
                              **({"input_timeout_s": timeout} if timeout else {})})

    def _release_held(self) -> None:
        """Let every held hook go without a decision (answered on screen, or closing)."""
        for held in self._held.values():
            if not held.future.done():
                held.future.set_result(None)
        self._held.clear()

    async def answer(self, input_id: str, kind: str, decision: str | None, option: str | None,
                     text: str | None, remember: bool) -> str:
        """Give Claude Code a person's answer: through the hook that still waits for it, else
        (the hook ran out of time) on the dialog on screen. Returns which ("hook", "screen").
        Checked here too: the option must be one the question offered."""
        held = self._held.get(input_id)
        if held is not None and held.options and option is not None and option not in held.options:
            raise TerminalError(f"option {option[:100]!r} is not one of {held.options}")
        held = self._held.pop(input_id, None)
        self._hook_waiting_at = None
        if held is not None and not held.future.done():
            held.future.set_result(decision_output(held, decision, option, text, remember))
            return "hook"
        await self.before_keys()
        dialog = self.dialog()
        if dialog is None:
            if text and kind in ("question", "dialog"):
                await self.manager.send_keystrokes(self.session_id, ["enter"], text)
                return "screen"
            raise TerminalError("Claude Code shows no dialog to answer (it moved on)")
        labels = [option_label(o) for o in dialog.options]
        if option is not None:
            target = next((i for i, label in enumerate(labels) if label == option), None)
        elif decision == "allow":
            target = next((i for i, label in enumerate(labels) if remember
                           and label.lower().startswith("yes") and "always" in label.lower()),
                          policy_option(dialog, "accept"))
        elif decision == "deny":
            await self.manager.send_keystrokes(self.session_id, ["esc"])
            return "screen"
        else:
            await self.manager.send_keystrokes(self.session_id, ["enter"], text)
            return "screen"
        if target is None:
            raise TerminalError(f"the dialog on screen has no such option: {dialog.options}")
        await self._select(target)
        return "screen"

    def _report_waiting(self, data: dict[str, Any]) -> None:
        self._hook_waiting_at = time.monotonic()
        ep = self._episode
        if ep is not None and ep.gone_at is None:
            ep.reported = True  # the dialog on screen now is this question
        self._emit("waiting_input", data)

    def _stopping(self) -> bool:
        """We are stopping it (terminate, worker drain): its exit is no job failure."""
        return (self._closed or bool(self.term is not None and self.term.stopping)
                or bool(getattr(self.manager, "draining", False)))

    def _on_exit(self) -> None:
        term = self.term
        if term is None or not self.job_open or self.session_end is not None or self._stopping():
            return
        how = (
            f"signal {term.exit_signal}"
            if term.exit_signal is not None
            else f"code {term.exit_code}"
        )
        self._emit("error", {"kind": "exit", "source": "process",
                             "reason": f"Claude Code exited mid-job ({how})"})

    # --- start-up -----------------------------------------------------------------------

    def _alive(self) -> bool:
        return self.term is not None and self.term.alive

    def _screen_tail(self, n: int = 12) -> str:
        return "\n".join([line for line in self.lines() if line.strip()][-n:])

    async def wait_ready(self, timeout_s: float) -> None:
        """Return once Claude Code is ready for a prompt: its input box is up, no dialog is
        open, and it has loaded this folder's settings (the SessionStart hook; after
        SESSION_START_GRACE_S of a quiet box, the box alone). Start-up dialogs are answered
        by policy meanwhile (_police, from the watcher)."""
        deadline = time.monotonic() + timeout_s
        box_since: float | None = None
        while True:
            now = time.monotonic()
            lines = self.lines()
            if not self._alive():
                await asyncio.sleep(POLL_S * 2)  # let the watcher take the last output
                code = self.term.exit_code if self.term else None
                raise StartupError(f"Claude Code exited during start-up (code {code}); its "
                                   f"screen:\n{self._screen_tail()}")
            if self.startup_error is not None:
                raise self.startup_error
            if input_box_row(lines) is not None and find_dialog(lines) is None \
                    and self.dialog() is None:
                box_since = box_since or now
                if self.session_started.is_set() or now - box_since >= SESSION_START_GRACE_S:
                    if not self.session_started.is_set():
                        log.warning("%s: no SessionStart hook; ready by the screen alone",
                                    self.session_id)
                    self.started = True
                    return
            else:
                box_since = None
            if now > deadline:
                raise StartupError(f"Claude Code was not ready within {timeout_s:g}s; "
                                   f"its screen:\n{self._screen_tail()}")
            await asyncio.sleep(POLL_S)

    async def _answer_startup_dialog(self, ep: _Episode, now: float) -> None:
        """Answer a POLICY_DIALOGS dialog as the profile says, or raise why it cannot be."""
        dialog = ep.dialog
        kind = dialog.kind()
        answer = getattr(self.policy, kind)
        if answer == "fail":
            raise StartupError(
                f"Claude Code asks {dialog.question!r} and this machine's agent profile answers "
                f"its {kind} dialog with 'fail'; set dialogs.{kind} in SEMO_AGENT_PROFILES, or "
                "answer it once by running claude in that folder", permanent=True)
        if ep.acted_at is not None and now - ep.acted_at < 3.0:
            return  # give the last answer time to land
        if ep.actions >= 3:
            raise StartupError(f"Claude Code's {kind} dialog did not take our answer: "
                               f"{dialog.summary()!r}")
        target = policy_option(dialog, answer)
        if target is None:
            raise StartupError(f"no {answer!r} option in Claude Code's {kind} dialog: "
                               f"{', '.join(dialog.options)}", permanent=True)
        ep.acted_at, ep.actions = now, ep.actions + 1
        await self._select(target)

    async def _select(self, target: int) -> None:
        """Move the dialog's selection to option `target`, then press Enter."""
        dialog = self.dialog()
        if dialog is None:
            return
        delta = target - dialog.selected
        if delta:
            await self.manager.send_keystrokes(
                self.session_id, ["down" if delta > 0 else "up"] * abs(delta)
            )
            moved = await self._until(
                lambda: (d := self.dialog()) is not None and d.selected == target, 1.5
            )
            if not moved:
                return  # try again later
            await asyncio.sleep(0.15)
        await self.manager.send_keystrokes(self.session_id, ["enter"])

    async def _until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline or not self._alive():
                return predicate()
            await asyncio.sleep(POLL_S)
        return True

    # --- input --------------------------------------------------------------------------

    async def before_keys(self) -> None:
        """Hold keys until a freshly drawn dialog takes them. A hook tells of a question
        before Claude Code has drawn its dialog: keys for it wait for the dialog first."""
        asked = self._hook_waiting_at
        if asked is not None and time.monotonic() - asked < HOOK_REPORT_COVERS_S:
            await self._until(lambda: self.dialog() is not None, 3.0)
        ep = self._episode
        if ep is not None and ep.gone_at is None:
            wait = KEY_SETTLE_S - (time.monotonic() - ep.first_seen)
            if wait > 0:
                await asyncio.sleep(wait)

    def note_keys(self) -> None:
        self._hook_waiting_at = None  # an answer: what asks next is a new question
        self._release_held()  # keys answered the dialog on screen: the hooks need not
        ep = self._episode
        if ep is not None:
            ep.keys_at = time.monotonic()

    def _box(self) -> tuple[str | None, bool]:
        """(input box text or None, whether that text is only a placeholder)."""
        lines = self.lines()
        row = input_box_row(lines)
        if row is None:
            return None, False
        text = input_box(lines) or ""
        if not text or any(text.startswith(p) for p in PLACEHOLDERS):
            return text, True
        # a placeholder has the (reverse-video) cursor on its first character; typed text
        # has it after the text
        cell = self.screen.buffer[row].get(2)
        return text, bool(cell is not None and cell.reverse and "\n" not in text
                          and _indent(lines[row][1:].replace("\xa0", " ")) <= 1)

    def _ready_for_prompt(self) -> bool:
        lines = self.lines()
        return (
            input_box_row(lines) is not None and not is_busy(lines) and find_dialog(lines) is None
        )

    async def submit(self, prompt: str, job_id: str | None) -> None:
        """Type `prompt` into the input box and submit it (see the module docstring)."""
        term = self.term
        if term is None or not term.alive:
            raise TerminalError(f"session {self.session_id}'s Claude Code is not running")
        if not prompt.strip():
            raise TerminalError("an empty prompt cannot be submitted")
        term.job_id = job_id
        term.monitor.expect_echo(prompt)
        term.busy, term.waiting = True, False
        self.job_open = job_id is not None
        self.session_end = None
        self.prompt_submitted.clear()

        dialog = self.dialog()
        if dialog is not None and not self._policy_answers(dialog) \
                and not (dialog.text and dialog.text[0].startswith("Rewind")):
            self.job_open = False  # never typed into a dialog: a person answers it first
            raise DialogOpen(dialog)
        if not await self._until(self._ready_for_prompt, SUBMIT_READY_TIMEOUT_S):
            dialog = self.dialog()
            if dialog is not None and dialog.text and dialog.text[0].startswith("Rewind"):
                await self.manager.send_keystrokes(self.session_id, ["esc"])
            if not await self._until(self._ready_for_prompt, 2.0):
                self.job_open = False
                what = f"a dialog: {dialog.summary()!r}" if dialog else "no input box"
                raise TerminalError(f"Claude Code is not ready for a prompt (it shows {what}); "
                                    f"its screen:\n{self._screen_tail()}")
        text, placeholder = self._box()
        if text and not placeholder:
            # left by an interrupted turn: Esc Esc empties the box
            await self.manager.send_keystrokes(self.session_id, ["esc", "esc"])
            cleared = await self._until(lambda: (b := self._box())[0] is not None
                                        and (not b[0] or b[1]), 3.0)
            if not cleared:
                self.job_open = False
                raise TerminalError(f"could not empty Claude Code's input box; its screen:\n"
                                    f"{self._screen_tail()}")

        first = next(line for line in prompt.splitlines() if line.strip())
        probe = " ".join(first.split())[:30]

        def echoed() -> bool:
            box = self._box()[0] or ""
            return probe in " ".join(box.split()) or "[Pasted text" in box

        await self.manager.send_keystrokes(self.session_id, [], PASTE_START + prompt + PASTE_END)
        if not await self._until(echoed, ECHO_TIMEOUT_S):
            self.job_open = False
            raise TerminalError(f"the prompt did not show in Claude Code's input box; its screen:\n"
                                f"{self._screen_tail()}")
        await self.manager.send_keystrokes(self.session_id, ["enter"])

        def taken() -> bool:
            if self.prompt_submitted.is_set():
                return True
            lines = self.lines()
            return is_busy(lines) or (input_box_row(lines) is not None and not echoed())

        for attempt in range(2):
            if await self._until(taken, CONFIRM_S):
                return
            if attempt == 0:
                await self.manager.send_keystrokes(self.session_id, ["enter"])
        self.job_open = False
        raise TerminalError(
            f"Claude Code did not take the prompt; its screen:\n{self._screen_tail()}"
        )


# --- per worker -------------------------------------------------------------------------------


class ClaudeIntegration:
    """The client worker's Claude Code side: the hook server and one driver per session."""

    def __init__(self, settings: Settings, manager: SessionManager, signal: SignalFn,
                 office_policy: Callable[[str], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.settings = settings
        self.manager = manager
        self.signal = signal
        self.office_policy = office_policy
        self.roots = settings.resolved_workspace_roots
        self.server = HookServer(socket_path(settings), hold_s=settings.hook_decision_wait_s)
        self.drivers: dict[str, ClaudeDriver] = {}

    async def prepare(self, session_id: str, generation: int, working_dir: Path,
                      profile: AgentProfile, office_id: str | None = None
                      ) -> tuple[ClaudeDriver, dict[str, str]]:
        """Hooks in the worktree, a driver and a fresh secret: the environment to start with."""
        await self.server.start()
        await asyncio.to_thread(merge_settings, working_dir, self.roots, None,
                                self.settings.hook_decision_wait_s)
        await self.release(session_id)
        lookup = self.office_policy
        policy = (lambda: lookup(office_id)) if lookup is not None and office_id else None
        driver = ClaudeDriver(self.manager, session_id, generation, profile, self.signal,
                              rows=self.manager.rows, cols=self.manager.cols, policy=policy,
                              working_dir=str(working_dir))
        token = self.server.register(session_id, driver.on_hook)
        self.drivers[session_id] = driver
        return driver, {"SEMO_HOOK_SOCKET": str(self.server.path), "SEMO_HOOK_TOKEN": token}

    def get(self, session_id: str, generation: int | None = None) -> ClaudeDriver | None:
        driver = self.drivers.get(session_id)
        if driver is None or (generation is not None and driver.generation != generation):
            return None
        return driver

    async def release(self, session_id: str) -> None:
        driver = self.drivers.pop(session_id, None)
        if driver is not None:
            self.server.unregister(session_id, driver.on_hook)
            await driver.close()

    async def close(self) -> None:
        for session_id in list(self.drivers):
            await self.release(session_id)
        await self.server.close()
