"""The program a Claude Code hook runs: hand the hook's event to this machine's client worker.

Claude Code runs it (`python -I -S hook_relay.py`, set up by activities/claude/) with the
event as one JSON object on stdin and the agent's environment, which carries:

    SEMO_HOOK_SOCKET   the client worker's Unix socket
    SEMO_HOOK_TOKEN    this session's secret (one session cannot speak for another)
    SEMO_SESSION_ID    the session

It sends one line, `{"session_id", "token", "event"}`, waits for the worker's one-line answer
and exits 0 (while no worker listens, as one restarts, it knocks again for a while: the
next worker takes over the socket). It prints nothing, whatever happens, unless the
worker's answer carries a decision (`{"output": {...}}`: a person's answer to a
PermissionRequest or an AskUserQuestion, or an office rule's), which it prints for Claude
Code to act on: a hook's output and exit code steer Claude Code, and supervision must
never change what the agent does on its own. For those events the worker may hold the
answer for a while (a person deciding); Claude Code's own hook timeout bounds that.
Outside a semo session (the variables missing, someone running `claude` in the worktree by
hand) it does nothing.

Codex's hooks run it too (activities/codex/config.py): the same events on stdin, and the same
`PermissionRequest` decision printed back.

Standard library only, no imports from this project: it starts in a few milliseconds.
"""

import json
import os
import socket
import sys
import time

MAX_EVENT_BYTES = 8 * 1024 * 1024
MAX_ANSWER_BYTES = 1024 * 1024
TIMEOUT_S = 10.0
#: how long an answer may take once the event is sent (a held decision); Claude Code kills
#: the hook at its own timeout, which semo sets lower than this
ANSWER_TIMEOUT_S = 3600.0
#: how long to keep knocking while no worker listens (one is restarting: the next worker
#: adopts the agent and takes over its socket within seconds), so the event is not lost;
#: SEMO_HOOK_RECONNECT_S in the agent's environment sets it
RECONNECT_S = 30.0
RECONNECT_EVERY_S = 0.2


def connect(path: str) -> socket.socket:
    """A connection to the worker's socket, waiting up to RECONNECT_S for one to listen."""
    try:
        patience = float(os.environ.get("SEMO_HOOK_RECONNECT_S", RECONNECT_S))
    except ValueError:
        patience = RECONNECT_S
    deadline = time.monotonic() + patience
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT_S)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(RECONNECT_EVERY_S)
        except OSError:
            sock.close()
            raise


def main() -> int:
    path = os.environ.get("SEMO_HOOK_SOCKET")
    token = os.environ.get("SEMO_HOOK_TOKEN")
    session_id = os.environ.get("SEMO_SESSION_ID")
    raw = sys.stdin.buffer.read(MAX_EVENT_BYTES + 1)
    if not (path and token and session_id):
        return 0
    try:
        event = json.loads(raw[:MAX_EVENT_BYTES].decode("utf-8", "replace"))
    except ValueError:
        event = {"_unparsed": raw[:4096].decode("utf-8", "replace")}
    if len(raw) > MAX_EVENT_BYTES and isinstance(event, dict):
        event["_truncated"] = True
    message = json.dumps({"session_id": session_id, "token": token, "event": event},
                         separators=(",", ":")).encode() + b"\n"
    answer = b""
    try:
        with connect(path) as sock:
            sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(ANSWER_TIMEOUT_S)
            # "ok", "denied" or a decision: wait, so the event is taken before we exit
            while len(answer) <= MAX_ANSWER_BYTES and not answer.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        pass  # the worker is gone or busy: the agent goes on regardless
    if answer.startswith(b"{"):
        try:
            output = json.loads(answer).get("output")
        except ValueError:
            output = None
        if isinstance(output, dict):
            sys.stdout.write(json.dumps(output))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BaseException:  # never a non-zero exit: that would change what the agent does
        sys.exit(0)
