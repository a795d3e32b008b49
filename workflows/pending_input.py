"""A session's pending input: what a waiting_input event describes, and whether an answer
fits it. Deterministic (no I/O): the session workflow calls these."""

from __future__ import annotations

from datetime import timedelta

from workflows.contracts import AnswerInput, MonitorSignal, PendingInput


def pending_input(ev: MonitorSignal, now) -> PendingInput:
    """The pending input a waiting_input event describes (screen, hooks or the shell monitor)."""
    d = ev.data
    kind = d.get("kind") if d.get("kind") in ("permission", "question", "plan") else "dialog"
    options = d.get("options")
    timeout = d.get("input_timeout_s")
    deadline = (now + timedelta(seconds=float(timeout))
                if isinstance(timeout, (int, float)) and timeout > 0 and kind != "dialog" else None)
    return PendingInput(
        input_id=str(d.get("input_id") or f"in-{ev.generation}-{ev.offset}"), kind=kind,  # type: ignore[arg-type]
        tool=d.get("tool") if isinstance(d.get("tool"), str) else None, input=d.get("input"),
        question=str(d.get("question") or "")[:2000] or None,
        options=[str(o)[:200] for o in options][:20] if isinstance(options, list) else None,
        since=now, deadline=deadline)


def answer_problem(pending: PendingInput, inp: AnswerInput) -> str | None:
    """Why `inp` does not answer `pending` (a decision for a question, an unknown option)."""
    if pending.kind in ("permission", "plan"):
        if inp.decision is None:
            return f"a {pending.kind} is answered with decision 'allow' or 'deny'"
        if inp.option is not None:
            return f"a {pending.kind} takes a decision, not an option"
        return None
    if inp.decision is not None:
        return f"a {pending.kind} is answered with an option or text, not a decision"
    if inp.remember:
        return "remember applies to permissions only"
    if inp.option is None and not inp.text:
        return f"a {pending.kind} is answered with an option or text"
    if inp.option is not None and pending.options and inp.option not in pending.options:
        return f"option {inp.option[:100]!r} is not one of {pending.options}"
    if inp.option is not None and not pending.options:
        return "this question offers no options: answer it with text"
    return None
