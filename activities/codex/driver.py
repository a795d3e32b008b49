"""One Codex CLI terminal: watches its screen, takes its hook events, types its prompts.

Truth comes from the hooks first (docs/codex.md, "What semo makes of it"): `Stop` ends a turn
(its `last_assistant_message` decides done / failed / turn_end, as for Claude Code),
`PermissionRequest` is a held approval, `UserPromptSubmit` confirms a prompt and names the
turn and the rollout file. A turn the model API refuses has no hook: the rollout file's
`task_complete` with an `error` fails the job. The screen is read only where nothing else
speaks: readiness (no hook fires before the first prompt) and start-up screens (folder
trust, answered by the profile's policy)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from activities.claude.errors import DialogOpen, StartupError
from activities.claude.follow import FollowedScreen
from activities.claude.hooks import Held, decision_output
from activities.claude.reply import clip, reply_outcome
from activities.claude.screen import bounded_input
from activities.codex.constants import (
    CONFIRM_S,
    ECHO_TIMEOUT_S,
    IDLE_WAKE_S,
    KEY_SETTLE_S,
    PASTE_END,
    PASTE_START,
    POLL_S,
    ROLLOUT_POLL_S,
    SUBMIT_READY_TIMEOUT_S,
)
from activities.codex.rollout import Cursor, is_rollout, read_lines, turn_error
from activities.codex.screen import CodexDialog, composer, find_dialog, is_idle
from activities.monitor import MonitorEvent
from activities.terminal import SessionManager, Terminal, TerminalError
from semo import permission_rules
from semo.settings import AgentProfile

log = logging.getLogger(__name__)

SignalFn = Callable[[Terminal, MonitorEvent], Any]
PolicyFn = Callable[[], Any]
#: a start-up screen no policy answers, shown this long, fails the start
UNKNOWN_SCREEN_S = 3.0
#: a dialog shown this long after start-up (no hook told of it) is reported
DIALOG_REPORT_S = 0.3
#: a hook's report of a question covers the screen's for this long
HOOK_REPORT_COVERS_S = 30.0


class CodexDriver:
    """Watches one Codex terminal's screen, takes its hook events, types its prompts.

    Events go to `signal(term, event)` in the order they happened, one at a time."""

    def __init__(self, manager: SessionManager, session_id: str, generation: int,
                 profile: AgentProfile, signal: SignalFn, rows: int = 40, cols: int = 120, *,
                 policy: PolicyFn | None = None, working_dir: str | None = None,
                 on_conversation: Callable[[str], None] | None = None,
                 on_turn: Callable[[str, Path | None], None] | None = None) -> None:
        self.manager = manager
        self.session_id = session_id
        self.generation = generation
        self.dialogs = profile.dialogs
        self.working_dir = working_dir
        self._signal = signal
        self._office_policy = policy
        self._on_conversation = on_conversation
        #: told each new turn and its rollout file (kept: a next worker's adopted driver
        #: starts from them, `resume_turn`)
        self._on_turn = on_turn
        self.term: Terminal | None = None
        self.view = FollowedScreen(cols, rows)
        self.job_open = False
        self.started = False
        self.prompt_submitted = asyncio.Event()
        self.startup_error: StartupError | None = None
        #: the conversation (Codex's session id, from its hooks) and the turn under way
        self.conversation_id: str | None = None
        self.turn_id: str | None = None
        self.rollout: Path | None = None
        self._cursor = Cursor()
        self._next_rollout_read = 0.0
        self._held: dict[str, Held] = {}
        self._hook_waiting_at: float | None = None
        #: the dialog on screen: (dialog, first seen, reported, last acted on)
        self._dialog: tuple[CodexDialog, float] | None = None
        self._reported: tuple | None = None
        self._acted_at = 0.0
        self._closed = False
        #: keys being sent to a start-up screen
        self._keys: set[asyncio.Task] = set()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = [asyncio.get_running_loop().create_task(self._deliver())]
        self.tap: Callable[[dict, str | None], None] | None = None
        #: an adopted driver's hook events do not reach the usage tap until its session
        #: re-attached and named the job (`resume`)
        self._usage_waits = False

    # --- lifecycle ----------------------------------------------------------------------

    def attach(self, term: Terminal) -> None:
        self.term = term
        self.view.resize(term.rows, term.cols)
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch()))

    def adopt(self, term: Terminal) -> None:
        """Drive an agent a dead worker started: past its start-up, perhaps mid-job (what it
        tells meanwhile waits for its session to re-attach and name the job: ClientActivities)."""
        self.started = True
        self.job_open = True
        self._usage_waits = True
        self.attach(term)

    def resume(self, job_id: str | None) -> None:
        """The adopted agent's session re-attached: `job_id` runs (None: none does). Only now
        is the usage tap told the rollout file, and that the turn under way is that job's
        (as the turn's prompt hook told the dead worker's): what the turn's responses used
        counts for the job, none of it read as no job's before."""
        if job_id is None:
            self.job_open = False
        self._usage_waits = False
        if self.tap is not None:
            self.tap({"hook_event_name": "UserPromptSubmit",
                      **({"turn_id": self.turn_id} if self.turn_id else {}),
                      **({"transcript_path": str(self.rollout)} if self.rollout else {})},
                     job_id)

    def resume_turn(self, turn_id: str | None, rollout: Path | None) -> None:
        """An adopted agent's last turn and rollout file, as the dead worker's driver learned
        them from its hooks (none fire again until the next one): a turn the model API
        refuses is told only in the rollout file, under that turn's id. What a hook told this
        driver since is newer and stays."""
        if self.turn_id is None and turn_id:
            self.turn_id = turn_id
        if self.rollout is None and rollout is not None and is_rollout(rollout):
            self.rollout, self._cursor = rollout, Cursor()

    async def close(self) -> None:
        self._closed = True
        self._release_held()
        self._queue.put_nowait(None)
        for task in [*self._tasks[1:], *self._keys]:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._tasks[0]), 2)
        except (TimeoutError, asyncio.CancelledError):
            self._tasks[0].cancel()

    # --- the screen ---------------------------------------------------------------------

    def lines(self) -> list[str]:
        return self.view.lines()

    def _screen_tail(self, n: int = 12) -> str:
        return "\n".join([line for line in self.lines() if line.strip()][-n:])

    async def _follow(self, term: Terminal, *, rested: bool = False) -> bool:
        self.view.resize(term.rows, term.cols)
        return await self.view.follow(
            lambda since: self.manager.get_output(self.session_id, since=since),
            term.offset, time.monotonic(), exact=not self.started, rested=rested)

    async def _refresh(self) -> None:
        if self.term is not None:
            with contextlib.suppress(TerminalError):
                await self._follow(self.term, rested=True)
                self._look(time.monotonic())

    async def _watch(self) -> None:
        term = self.term
        assert term is not None
        while True:
            term.output.clear()
            try:
                changed = await self._follow(term)
            except TerminalError:
                return
            now = time.monotonic()
            self._look(now)
            if self.job_open and now >= self._next_rollout_read:
                self._next_rollout_read = now + ROLLOUT_POLL_S
                await self._read_rollout()
            if term.exited.is_set():
                self._on_exit()
                return
            if changed or self._dialog is not None or self.job_open or not self.started:
                await asyncio.sleep(POLL_S if changed or not self.started else ROLLOUT_POLL_S)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(term.output.wait(), IDLE_WAKE_S)

    def _look(self, now: float) -> None:
        """Follow the dialog on screen: answer a start-up screen by policy, report a question."""
        dialog = find_dialog(self.lines())
        if dialog is None:
            self._dialog = None
            return
        if self._dialog is None or self._dialog[0].key != dialog.key:
            self._dialog = (dialog, now)
        shown = now - self._dialog[1]
        kind = dialog.kind()
        if kind == "trust_folder":
            if self.dialogs.trust_folder == "fail":
                self.startup_error = self.startup_error or StartupError(
                    f"Codex asks {dialog.question!r} and this machine's agent profile answers "
                    "its trust_folder dialog with 'fail'; set dialogs.trust_folder, or trust "
                    "the folder once by running codex in it", permanent=True)
            elif shown >= KEY_SETTLE_S and now - self._acted_at > 3.0:
                self._acted_at = now
                target = next((i for i, o in enumerate(dialog.options) if "trust" in o.lower()),
                              0)
                task = asyncio.get_running_loop().create_task(self._select(dialog, target))
                self._keys.add(task)  # a task nobody holds may be collected mid-way
                task.add_done_callback(self._keys.discard)
            return
        if not self.started:
            if shown > UNKNOWN_SCREEN_S and self.startup_error is None:
                self.startup_error = StartupError(
                    f"Codex shows a start-up screen semo has no policy for: "
                    f"{dialog.summary()!r} (options: {', '.join(dialog.options)})",
                    permanent=True)
            return
        covered = (self._hook_waiting_at is not None
                   and now - self._hook_waiting_at < HOOK_REPORT_COVERS_S)
        if self._reported != dialog.key and shown >= DIALOG_REPORT_S and not covered:
            self._reported = dialog.key
            self._emit("waiting_input", {"question": dialog.summary(),
                                         "options": list(dialog.options)[:10], "kind": kind,
                                         "source": "screen"})

    async def _select(self, dialog: CodexDialog, target: int) -> None:
        try:
            delta = target - dialog.selected
            if delta:
                await self.manager.send_keystrokes(self.session_id,
                                                   ["down" if delta > 0 else "up"] * abs(delta))
                await asyncio.sleep(0.15)
            await self.manager.send_keystrokes(self.session_id, ["enter"])
        except TerminalError as err:
            log.warning("%s: answering Codex's screen failed: %s", self.session_id, err)

    def dialog(self) -> CodexDialog | None:
        return self._dialog[0] if self._dialog is not None else None

    # --- the rollout file ---------------------------------------------------------------

    async def _read_rollout(self) -> None:
        """A refused turn is recorded only there (`task_complete` with `error`)."""
        path = self.rollout
        if path is None:
            return
        for entry in await asyncio.to_thread(read_lines, path, self._cursor):
            found = turn_error(entry)
            if found is not None and self.job_open and found[0] == self.turn_id:
                self._emit("error", {"kind": "api_error", "reason": clip(found[1]),
                                     "source": "rollout"})

    # --- events -------------------------------------------------------------------------

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        term = self.term
        job_id = term.job_id if term is not None and self.job_open else None
        if kind in ("completion", "error"):
            self.job_open = False
            self._hook_waiting_at = None
        if term is not None:
            if kind in ("completion", "error"):
                term.busy = False
            elif kind == "waiting_input":
                term.waiting = True
        payload = dict(data)
        if job_id is not None:
            payload["job_id"] = job_id
        offset = term.offset if term is not None else 0
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
        """A hook event from the relay (already authenticated), handled in order; for a
        PermissionRequest, a future the relay waits on for the decision."""
        if self.tap is not None and not self._usage_waits:
            self.tap(event, self.term.job_id if self.term is not None and self.job_open else None)
        name = event.get("hook_event_name")
        if name == "UserPromptSubmit":
            self._note_turn(event)
            self.prompt_submitted.set()  # at once: submit() may be waiting for it
        elif self.rollout is None:  # an adopted driver: every event names the rollout file
            self._note_rollout(event)
        future = (asyncio.get_running_loop().create_future()
                  if name == "PermissionRequest" else None)
        self._queue.put_nowait(("hook", (event, future)))
        return future

    def _note_turn(self, event: dict) -> None:
        conversation = event.get("session_id")
        if isinstance(conversation, str) and conversation and conversation != self.conversation_id:
            self.conversation_id = conversation
            if self._on_conversation is not None:
                self._on_conversation(conversation)
        turn = event.get("turn_id")
        new_turn = isinstance(turn, str) and bool(turn) and turn != self.turn_id
        if new_turn:
            self.turn_id = turn
        moved = self._note_rollout(event)
        if (new_turn or moved) and self.turn_id and self._on_turn is not None:
            self._on_turn(self.turn_id, self.rollout)

    def _note_rollout(self, event: dict) -> bool:
        """Learn the rollout file the event names; whether it is a new one."""
        path = event.get("transcript_path")
        if isinstance(path, str) and is_rollout(Path(path)) and Path(path) != self.rollout:
            self.rollout, self._cursor = Path(path), Cursor()
            return True
        return False

    async def _on_hook(self, event: dict, future: asyncio.Future | None = None) -> None:
        name = event.get("hook_event_name")
        if name == "SessionStart":
            self._note_turn(event)
        elif name == "Stop":
            text = event.get("last_assistant_message")
            kind, data = reply_outcome(text if isinstance(text, str) else "")
            self._emit(kind, {**data, "source": "hook"})
        elif name == "PermissionRequest":
            await self._permission(event, future)

    async def _permission(self, event: dict, future: asyncio.Future | None) -> None:
        """Codex asks to run a command: the office's rule answers at once, else a person
        (`pending_input`), through the held hook."""
        tool, tool_input = str(event.get("tool_name") or "?")[:100], event.get("tool_input")
        command = tool_input.get("command") if isinstance(tool_input, dict) else None
        detail = command if isinstance(command, str) else json.dumps(tool_input, default=str)
        policy = await self._policy()
        ruled = permission_rules.decide(policy.get("permission_rules"), tool, tool_input,
                                        self.working_dir)
        if ruled is not None and future is not None:
            decision, rule = ruled
            held = Held("permission", event, future, [])
            future.set_result(decision_output(held, decision, None,
                                              f"Denied by the office rule {rule}.", False))
            self._hook_waiting_at = time.monotonic()
            self._emit("permission_auto", {"tool": tool, "input": bounded_input(tool_input),
                                           "decision": decision, "rule": rule,
                                           "source": "rule"})
            return
        input_id = f"in-{secrets.token_hex(8)}"
        if future is not None and not future.done():
            self._held[input_id] = Held("permission", event, future, [])
        timeout = policy.get("input_timeout_s")
        self._hook_waiting_at = time.monotonic()
        self._emit("waiting_input", {
            "kind": "permission", "input_id": input_id, "tool": tool,
            "input": bounded_input(tool_input),
            "question": clip(f"Codex asks to run: {detail}"), "source": "hook",
            **({"input_timeout_s": timeout} if timeout else {})})

    async def _policy(self) -> dict[str, Any]:
        if self._office_policy is None:
            return {}
        try:
            return await asyncio.wait_for(self._office_policy(), 5) or {}
        except Exception as err:  # no rule applies; a person decides
            log.warning("%s: office policy not read: %s", self.session_id, err)
            return {}

    def _release_held(self) -> None:
        for held in self._held.values():
            if not held.future.done():
                held.future.set_result(None)
        self._held.clear()

    def _stopping(self) -> bool:
        return (self._closed or bool(self.term is not None and self.term.stopping)
                or bool(getattr(self.manager, "draining", False)))

    def _on_exit(self) -> None:
        term = self.term
        if term is None or not self.job_open or self._stopping():
            return
        how = (f"signal {term.exit_signal}" if term.exit_signal is not None
               else f"code {term.exit_code}")
        self._emit("error", {"kind": "exit", "source": "process",
                             "reason": f"Codex exited mid-job ({how})"})

    # --- answers ------------------------------------------------------------------------

    async def answer(self, input_id: str, kind: str, decision: str | None, option: str | None,
                     text: str | None, remember: bool) -> str:
        """A person's answer: through the hook that still waits for it, else on the screen.
        Returns which ("hook", "screen")."""
        held = self._held.pop(input_id, None)
        self._hook_waiting_at = None
        if held is not None and not held.future.done():
            held.future.set_result(decision_output(held, decision, option, text, False))
            return "hook"
        await self.before_keys()
        dialog = self.dialog()
        if dialog is None:
            if text:
                await self.manager.send_keystrokes(self.session_id, ["enter"], text)
                return "screen"
            raise TerminalError("Codex shows no dialog to answer (it moved on)")
        if decision == "deny":
            await self.manager.send_keystrokes(self.session_id, ["esc"])
            return "screen"
        if option is not None:
            target = next((i for i, o in enumerate(dialog.options) if o == option), None)
        elif decision == "allow":
            target = 0  # "Yes, proceed"
        else:
            await self.manager.send_keystrokes(self.session_id, ["enter"], text)
            return "screen"
        if target is None:
            raise TerminalError(f"the dialog on screen has no such option: {dialog.options}")
        await self._select(dialog, target)
        return "screen"

    # --- start-up -----------------------------------------------------------------------

    def _alive(self) -> bool:
        return self.term is not None and self.term.alive

    async def wait_ready(self, timeout_s: float) -> None:
        """Return once Codex shows its idle composer and no dialog (start-up screens are
        answered by policy meanwhile, from the watcher)."""
        deadline = time.monotonic() + timeout_s
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            if not self._alive():
                await asyncio.sleep(POLL_S * 2)
                how = (f"signal {self.term.exit_signal}" if self.term is not None
                       and self.term.exit_signal is not None else
                       f"code {self.term.exit_code if self.term else None}")
                raise StartupError(f"Codex exited during start-up ({how}); its screen:\n"
                                   f"{self._screen_tail()}")
            if self.startup_error is not None:
                raise self.startup_error
            if is_idle(self.lines()) and self.dialog() is None:
                idle_since = idle_since or now
                if now - idle_since >= KEY_SETTLE_S:  # keys sent earlier are half-lost
                    self.started = True
                    return
            else:
                idle_since = None
            if now > deadline:
                raise StartupError(f"Codex was not ready within {timeout_s:g}s; its screen:\n"
                                   f"{self._screen_tail()}")
            await asyncio.sleep(POLL_S)

    # --- input --------------------------------------------------------------------------

    async def _until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        await self._refresh()
        while not predicate():
            if time.monotonic() > deadline or not self._alive():
                return predicate()
            await asyncio.sleep(POLL_S)
            await self._refresh()
        return True

    async def before_keys(self) -> None:
        await self._refresh()
        if self._dialog is not None:
            wait = KEY_SETTLE_S - (time.monotonic() - self._dialog[1])
            if wait > 0:
                await asyncio.sleep(wait)

    def note_keys(self) -> None:
        self._hook_waiting_at = None
        self._release_held()  # keys answered the screen: the hook need not

    async def submit(self, prompt: str, job_id: str | None) -> None:
        """Paste `prompt` into the composer and submit it; confirmed by UserPromptSubmit."""
        term = self.term
        if term is None or not term.alive:
            raise TerminalError(f"session {self.session_id}'s Codex is not running")
        if not prompt.strip():
            raise TerminalError("an empty prompt cannot be submitted")
        term.job_id = job_id
        term.monitor.expect_echo(prompt)
        term.busy, term.waiting = True, False
        self.job_open = job_id is not None
        self.prompt_submitted.clear()
        await self._refresh()
        dialog = self.dialog()
        if dialog is not None and dialog.kind() != "trust_folder":
            self.job_open = False  # never typed into a dialog: a person answers it first
            raise DialogOpen(dialog)
        if not await self._until(lambda: composer(self.lines()) is not None
                                 and self.dialog() is None, SUBMIT_READY_TIMEOUT_S):
            self.job_open = False
            raise TerminalError(f"Codex is not ready for a prompt; its screen:\n"
                                f"{self._screen_tail()}")
        first = next(line for line in prompt.splitlines() if line.strip())
        probe = " ".join(first.split())[:30]

        def echoed() -> bool:
            box = composer(self.lines()) or ""
            return probe in " ".join(box.split()) or "[Pasted" in box

        await self.manager.send_keystrokes(self.session_id, [], PASTE_START + prompt + PASTE_END)
        if not await self._until(echoed, ECHO_TIMEOUT_S):
            self.job_open = False
            raise TerminalError(f"the prompt did not show in Codex's composer; its screen:\n"
                                f"{self._screen_tail()}")
        await self.manager.send_keystrokes(self.session_id, ["enter"])
        for attempt in range(2):
            if await self._until(lambda: self.prompt_submitted.is_set() or not echoed(),
                                 CONFIRM_S):
                return
            if attempt == 0:
                await self.manager.send_keystrokes(self.session_id, ["enter"])
        self.job_open = False
        raise TerminalError(f"Codex did not take the prompt; its screen:\n{self._screen_tail()}")
