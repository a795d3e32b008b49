"""One Claude Code terminal: watches its screen, takes its hook events, types its prompts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activities.claude.constants import (
    ASKING_TOOLS,
    BEHIND_POLL_S,
    CONFIRM_S,
    DIALOG_GONE_S,
    DIALOG_REPORT_S,
    ECHO_TIMEOUT_S,
    HOOK_REPORT_COVERS_S,
    IDLE_WAKE_S,
    KEY_SETTLE_S,
    PASTE_END,
    PASTE_START,
    PLACEHOLDERS,
    POLICY_DIALOGS,
    POLL_S,
    REASK_AFTER_KEYS_S,
    SESSION_START_GRACE_S,
    SUBMIT_READY_TIMEOUT_S,
    PolicyFn,
    SignalFn,
)
from activities.claude.errors import DialogOpen, StartupError
from activities.claude.follow import FollowedScreen
from activities.claude.hooks import Held, decision_output
from activities.claude.reply import clip, last_assistant_text, reply_outcome
from activities.claude.screen import (
    Dialog,
    _indent,
    bounded_input,
    find_dialog,
    input_box,
    input_box_row,
    is_busy,
    option_label,
    policy_option,
)
from activities.monitor import MonitorEvent
from activities.terminal import SessionManager, Terminal, TerminalError
from semo import permission_rules
from semo.settings import AgentProfile, StartupDialogs

log = logging.getLogger(__name__)


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
        self._held: dict[str, Held] = {}
        self.session_id = session_id
        self.generation = generation
        self.policy: StartupDialogs = profile.dialogs
        self._signal = signal
        self.term: Terminal | None = None
        #: the terminal's screen, as far as it is followed (activities/claude/follow.py)
        self.view = FollowedScreen(cols, rows)
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
        self.view.resize(term.rows, term.cols)
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch()))

    def adopt(self, term: Terminal) -> None:
        """Drive an agent a dead worker started: past its start-up, perhaps mid-job (what it
        tells meanwhile waits for its session to re-attach and name the job: ClientActivities)."""
        self.started = True
        self.job_open = True
        self.attach(term)

    def resume(self, job_id: str | None) -> None:
        """The adopted agent's session re-attached: `job_id` runs (None: none does)."""
        if job_id is None:
            self.job_open = False

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
        """The screen as text lines."""
        return self.view.lines()

    def text(self) -> str:
        return "\n".join(line for line in self.lines() if line.strip())

    async def _follow(self, term: Terminal, now: float, *, rested: bool = False) -> bool:
        """Feed the screen what it has not seen, if worth it now (`rested`: now, whatever
        the rate); True when it changed."""
        self.view.resize(term.rows, term.cols)
        return await self.view.follow(
            lambda since: self.manager.get_output(self.session_id, since=since),
            term.offset, now, exact=not self.started, rested=rested)

    async def _refresh(self) -> None:
        """The screen up to date now, whatever the output's rate, and its dialog looked at:
        for a decision taken from it (typing a prompt, answering a dialog). The watcher may
        have left it behind a burst of output (a stand-in model streams a whole turn at
        once), showing a dialog that is gone."""
        term = self.term
        if term is None:
            return
        with contextlib.suppress(TerminalError):
            if await self._follow(term, time.monotonic(), rested=True):
                self._check_dialog(time.monotonic())

    async def _watch(self) -> None:
        """Feed the screen and follow its dialogs: every POLL_S while output comes or a dialog
        is open (how long it has been shown matters), every BEHIND_POLL_S while the screen is
        left behind a fast-drawing agent, else asleep until the next output."""
        term = self.term
        assert term is not None
        while True:
            term.output.clear()  # before feeding: output handed on after this wakes us
            try:
                changed = await self._follow(term, time.monotonic())
            except TerminalError:
                return  # terminated and forgotten by the manager
            now = time.monotonic()
            if changed or self._episode is not None:
                self._check_dialog(now)
            self._police(now)
            if term.exited.is_set():
                if not self._stopping():  # its last words, whatever the rate, for the error
                    with contextlib.suppress(TerminalError):
                        await self._follow(term, now, rested=True)
                self._on_exit()
                return
            if self.view.behind:
                await asyncio.sleep(BEHIND_POLL_S)
            elif changed or self._episode is not None:
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
            self._emit("error", {"kind": "stop_failure", "error": code, "reason": clip(reason),
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
                held = Held("permission", event, future, [])
                future.set_result(decision_output(
                    held, decision, None, f"Denied by the office rule {rule}.", False))
                self._hook_waiting_at = time.monotonic()  # its dialog, if drawn, is answered
                self._emit("permission_auto", {"tool": tool, "input": bounded_input(tool_input),
                                               "decision": decision, "rule": rule,
                                               "source": "rule"})
                return
            self._hold("permission", event, future, [], policy, {
                "tool": tool, "input": bounded_input(tool_input),
                "question": clip(f"Claude Code asks to use {tool}: {detail}")})
        elif name == "PreToolUse":
            tool, tool_input = str(event.get("tool_name") or ""), event.get("tool_input")
            if tool == "AskUserQuestion" and isinstance(tool_input, dict):
                questions = [q for q in tool_input.get("questions") or [] if isinstance(q, dict)]
                first = questions[0] if questions else {}
                options = [str(o.get("label") if isinstance(o, dict) else o)[:200]
                           for o in first.get("options") or []][:20]
                self._hold("question", event, future, options, await self._policy(), {
                    "tool": tool, "input": bounded_input(tool_input),
                    "question": clip(str(first.get("question") or "")), "options": options})
            elif tool == "ExitPlanMode":
                plan = tool_input.get("plan") if isinstance(tool_input, dict) else None
                self._hold("plan", event, future, [], await self._policy(), {
                    "tool": tool, "input": bounded_input(tool_input),
                    "question": clip(str(plan or "Claude Code has a plan"))})
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
            data = {"question": clip(str(event.get("message") or "Claude Code needs input")),
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
            self._held[input_id] = Held(kind, event, future, options)
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
        """Whether `predicate` (of the screen, brought up to date each look) holds within
        `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        await self._refresh()
        while not predicate():
            if time.monotonic() > deadline or not self._alive():
                return predicate()
            await asyncio.sleep(POLL_S)
            await self._refresh()
        return True

    # --- input --------------------------------------------------------------------------

    async def before_keys(self) -> None:
        """Hold keys until a freshly drawn dialog takes them. A hook tells of a question
        before Claude Code has drawn its dialog: keys for it wait for the dialog first."""
        await self._refresh()
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
        cell = self.view.screen.buffer[row].get(2)
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

        await self._refresh()
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
