"""The web console in a real browser: Playwright driving Debian's Chromium against the API
(with its real Postgres, Temporal, workers and shell-agent terminals).

A person logs in through the one-time link (which works once), watches a session's status
change live, types a prompt and sees its output in the terminal and the job turn `done`,
answers a waiting prompt from the inbox, and takes phone-sized screenshots. A browser that has
not logged in sees no office data; another office is a 404 everywhere, as on the REST routes;
the cookie does not change anything from another origin.

Playwright's own browser download cannot work here: `executable_path` points it at Debian's
`chromium`, which the `chromium` fixture installs when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from dev.embedded import venv_bin
from semo import procfs
from tests.claude_standin.install import pinned_version
from tests.support.api_calls import new_session
from tests.support.paths import REPO
from tests.support.tokens import MACHINE_ID, token_for
from tests.support.waiting import wait_for

# what the page shows comes over live streams: on a loaded 2-core machine, give it time
expect.set_options(timeout=20_000)

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = REPO  # the repository
VENDOR = ROOT / "api" / "console" / "build" / "vendor"
PHONE = {"width": 390, "height": 844}
#: where screenshots go: SEMO_CONSOLE_SCREENSHOTS (docs/ is made with it), else the test's tmp
SCREENSHOTS = os.environ.get("SEMO_CONSOLE_SCREENSHOTS")
DONE = "printf '[SEMO:%s]\\n' DONE"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed when missing (the test setup runs as root, as CI does)."""
    if not CHROMIUM.exists():
        assert shutil.which("apt-get") and os.geteuid() == 0, \
            "tests/api/test_console.py needs Chromium: `apt-get install -y chromium` (as root)"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=600,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env,
                       timeout=900, stdout=subprocess.DEVNULL)
    return CHROMIUM


@pytest.fixture(scope="session")
def console_built() -> None:
    """The console's vendor files (xterm.js), built as `make test` builds them."""
    if not (VENDOR / "xterm.js").exists():
        subprocess.run(["make", "-s", "console"], cwd=ROOT, check=True, timeout=600)


@pytest.fixture(scope="module")
async def browser(chromium, console_built):
    """One browser for this module, and none of its processes left after it: the test
    process is a child subreaper (the in-process client worker), so Chromium's helpers that
    outlive their parent become its children (which tests of process leaks would count)."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=LAUNCH_ARGS)
        yield browser
        await browser.close()
    await _end_orphans(_chromium_children)


def _chromium_children() -> list[int]:
    me, found = os.getpid(), []
    for pid, fields in procfs.processes():
        if int(fields[procfs.PPID]) != me or fields[procfs.STATE] == b"Z":
            continue
        try:
            if b"chrom" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


async def _end_orphans(find, grace_s: float = 10.0) -> None:
    """Let the processes `find` names exit by themselves, kill those that do not, and reap
    them all (they are this process's children)."""
    deadline = asyncio.get_running_loop().time() + grace_s
    while find() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    for pid in find():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid, fields in procfs.processes():
        if int(fields[procfs.PPID]) == os.getpid() and fields[procfs.STATE] == b"Z":
            try:
                if b"chrom" in Path(f"/proc/{pid}/comm").read_bytes():
                    os.waitpid(pid, os.WNOHANG)
            except (OSError, ChildProcessError):
                continue
    assert not find(), "Chromium processes outlived the browser"


@pytest.fixture(autouse=True)
async def deleted_after(http, office):
    """Each test's offices are deleted after it, their sessions terminated: live terminals of
    the in-process worker would restart while later, synchronous tests hold the event loop."""
    offices = [office]
    yield offices
    for office_id in offices:
        r = await http.delete(f"/api/offices/{office_id}")
        assert r.status_code in (200, 404), r.text


@pytest.fixture
async def context(browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    await context.close()


def viewer_token(office_ids: list[str]) -> str:
    """A token of someone who opens these offices only (the `http` fixture's user created
    every office, which makes it a member of each)."""
    return token_for(office_ids, sub="console-viewer")


async def login_url(http, office_ids: list[str], next_path: str = "/console/") -> str:
    """A one-time console link, minted as `semo dev` mints `console_url`."""
    r = await http.post("/api/console/login-codes", json={"next": next_path},
                        headers={"Authorization": f"Bearer {viewer_token(office_ids)}"})
    assert r.status_code == 201, r.text
    return r.json()["url"]


async def log_in(page: Page, http, office_ids: list[str], next_path: str) -> None:
    await page.goto(await login_url(http, office_ids, next_path))
    await page.wait_for_url(re.compile(re.escape(next_path) + "$"))


async def new_session_id(http, office: str) -> str:
    return (await new_session(http, office))["session_id"]


async def job_status(http, office: str, job_id: str) -> str:
    return (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()["status"]


def shot_path(tmp_path: Path, name: str) -> Path:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


async def phone_screenshot(page: Page, path: Path) -> None:
    """A phone-sized screenshot, and what a person would check on it: nothing wider than
    the screen (no sideways scrolling of the page)."""
    await page.set_viewport_size(PHONE)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.wait_for_timeout(300)  # let the layout settle after the resize
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"
    await page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 5000


# --- logging in ---------------------------------------------------------------------------


async def test_login_link_works_once_and_strangers_see_nothing(context, browser, http, office):
    sid = await new_session_id(http, office)
    url = await login_url(http, [office], f"/console/offices/{office}")
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_url(f"**/console/offices/{office}")
    await expect(page.locator("h1")).to_contain_text("test office")
    await expect(page.locator(f"article.session[data-session='{sid}']")).to_be_visible()
    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies["semo_console"]["httpOnly"] and cookies["semo_console"]["sameSite"] == "Strict"
    assert "code=" not in page.url
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
    assert await page.evaluate("localStorage.length + sessionStorage.length") == 0

    stranger = await browser.new_context()
    try:
        other = await stranger.new_page()
        r = await other.goto(url)  # the same link, a second time
        assert r.status == 401
        await expect(other.locator("#login-error")).to_contain_text("expired or has been used")
        r = await other.goto(f"{_origin(url)}/console/offices/{office}")
        assert urlsplit(other.url).path == "/console/login"
        body = await other.content()
        assert sid not in body and "test office" not in body
        for path in (f"/api/offices/{office}", f"/api/offices/{office}/sessions",
                     f"/api/offices/{office}/events", "/api/events"):
            assert (await other.request.get(f"{_origin(url)}{path}")).status == 401, path
        assert await _ws_outcome(other, office, sid) == "refused"
    finally:
        await stranger.close()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _ws_outcome(page: Page, office: str, sid: str) -> str:
    """What the page's own WebSocket to a session's attach gets: its hello, or refused."""
    return await page.evaluate("""([office, sid]) => new Promise((resolve) => {
        const ws = new WebSocket(`ws://${location.host}/api/offices/${office}/sessions/${sid}/attach?read_only=true`);
        ws.onmessage = (m) => { if (typeof m.data === "string") { resolve(JSON.parse(m.data).type); ws.close(); } };
        ws.onerror = () => resolve("refused");
    })""", [office, sid])


async def test_a_token_can_log_in_and_another_office_is_404(context, http, office, api_url,
                                                             deleted_after):
    other_office = f"t-{uuid.uuid4().hex[:10]}"
    deleted_after.append(other_office)
    r = await http.post("/api/offices", json={"office_id": other_office, "name": "not yours",
                                              "machine_id": MACHINE_ID, "agent": "shell",
                                              "warm_roles": []})
    assert r.status_code == 201, r.text
    mine, theirs = await new_session_id(http, office), await new_session_id(http, other_office)

    page = await context.new_page()
    # `next` is only ever a console page: another site's address lands on the office list
    await page.goto(f"{api_url}/console/login?{urlencode({'next': 'https://evil.example/'})}")
    await page.fill("textarea[name=token]", viewer_token([office]))
    await page.click("text=Log in with token")
    await page.wait_for_url(f"{api_url}/console/")
    await expect(page.locator(f"article.office[data-office='{office}']")).to_be_visible()
    assert await page.locator(f"article.office[data-office='{other_office}']").count() == 0

    for path in (f"/console/offices/{other_office}",
                 f"/console/offices/{other_office}/sessions/{theirs}",
                 f"/console/offices/{office}/sessions/{theirs}"):
        r = await page.goto(f"{api_url}{path}")
        assert r.status == 404, path
        assert "not yours" not in await page.content()
    await page.goto(f"{api_url}/console/")
    statuses = await page.evaluate("""async (paths) => {
        const out = [];
        for (const p of paths) out.push((await fetch(p)).status);
        return out;
    }""", [f"/api/offices/{other_office}", f"/api/offices/{other_office}/sessions/{theirs}",
           f"/api/offices/{other_office}/events", f"/api/offices/{office}"])
    assert statuses == [404, 404, 404, 200]
    assert await _ws_outcome(page, other_office, theirs) == "refused"
    assert await _ws_outcome(page, office, mine) == "hello"

    # the cookie changes nothing without the console's header, nor from another origin
    csrf = await page.evaluate("""async (office) => {
        const post = (headers) => fetch(`/api/offices/${office}/sessions`, {method: "POST",
            headers: {"Content-Type": "application/json", ...headers}, body: JSON.stringify({role: "QA"})});
        return [(await post({})).status];
    }""", office)
    assert csrf == [403]
    cookie = next(c for c in await context.cookies() if c["name"] == "semo_console")
    ws_url = f"ws://127.0.0.1:{urlsplit(api_url).port}/api/offices/{office}/sessions/{mine}/attach"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url, additional_headers={"Cookie": f"semo_console={cookie['value']}"},
                           origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as bare:
        r = await bare.post(f"/api/offices/{office}/sessions", json={"role": "QA"},
                            headers={"Cookie": f"semo_console={cookie['value']}",
                                     "X-Semo-Console": "1", "Origin": "http://evil.example"})
    assert r.status_code == 403, r.text
    sessions = (await http.get(f"/api/offices/{office}/sessions")).json()["sessions"]
    assert [s["role"] for s in sessions] == ["BE"]  # nothing was created

    await page.click("text=Log out")
    await page.wait_for_url("**/console/login")
    r = await page.goto(f"{api_url}/console/offices/{office}")
    assert urlsplit(page.url).path == "/console/login"


async def test_supabase_sign_in(context, api_url, settings, office, monkeypatch):
    """Email and password go to the Supabase project's auth server, whose access token
    becomes the console session. The auth server is a stand-in on loopback (a real project
    cannot be reached from here) that answers as GoTrue's password grant does."""
    seen: list[tuple[str, str | None, dict]] = []

    class GoTrue(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("apikey"), body))
            ok = body == {"email": "ana@example.com", "password": "right"}
            data = json.dumps({"access_token": viewer_token([office]), "token_type": "bearer"}
                              if ok else {"error": "invalid_grant"}).encode()
            self.send_response(200 if ok else 400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), GoTrue)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(settings, "supabase_url", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(settings, "supabase_key", SecretStr("anon-key"))
    try:
        page = await context.new_page()
        await page.goto(f"{api_url}/console/login?{urlencode({'next': f'/console/offices/{office}'})}")
        await page.fill("input[name=email]", "ana@example.com")
        await page.fill("input[name=password]", "wrong")
        await page.click("text=Sign in")
        await expect(page.locator("#login-error")).to_contain_text("Supabase refused")
        await page.fill("input[name=email]", "ana@example.com")
        await page.fill("input[name=password]", "right")
        await page.click("text=Sign in")
        await page.wait_for_url(f"{api_url}/console/offices/{office}")
        await expect(page.locator("h1")).to_contain_text("test office")
        assert seen[-1][:2] == ("/auth/v1/token?grant_type=password", "anon-key")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --- watching and steering ------------------------------------------------------------------


async def test_office_page_shows_status_changes_live(context, http, office, tmp_path):
    page = await context.new_page()
    await log_in(page, http, [office], f"/console/offices/{office}")
    await expect(page.locator("#no-sessions")).to_be_visible()

    sid = await new_session_id(http, office)  # made elsewhere: the page hears of it
    card = page.locator(f"article.session[data-session='{sid}']")
    await expect(card.locator(".status")).to_have_text("ready")
    await expect(page.locator("#pool")).to_contain_text("1 in use of 6")

    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                        json={"prompt": "echo preview-$((2+3)); sleep 600"})
    assert r.status_code == 200, r.text
    await expect(card.locator(".status")).to_have_text("busy")
    await expect(card.locator(".prompt-text")).to_contain_text("sleep 600")
    await expect(card.locator(".preview")).to_contain_text("preview-5")
    await phone_screenshot(page, tmp_path / "console-office-busy.png")

    assert (await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")).status_code == 200
    await expect(card.locator(".status")).to_have_text("ready")
    assert (await http.delete(f"/api/offices/{office}/sessions/{sid}")).status_code == 200
    await expect(card).to_have_count(0)


async def test_session_page_terminal_prompt_and_jobs(context, http, office, api_url, tmp_path):
    sid = await new_session_id(http, office)
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/keys",
                        json={"text": "echo before-$((40+2))\r"})
    assert r.status_code == 200, r.text

    async def shown():
        out = (await http.get(f"/api/offices/{office}/sessions/{sid}/output")).json()["data"]
        return "before-42" in out
    await wait_for(shown, what="the keys' output")

    # done when: the console link opens this session's page, with its id, status and output
    # (the link from `semo console`, which asks the API as `semo dev` does for console_url)
    next_path = f"/console/offices/{office}/sessions/{sid}"
    proc = await asyncio.create_subprocess_exec(
        str(venv_bin("semo")), "console", "--next", next_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={"PATH": os.environ["PATH"], "SEMO_API_URL": api_url,
                                     "SEMO_TOKEN": viewer_token([office]),
                                     "SEMO_HOME": str(tmp_path)})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    page = await context.new_page()
    await page.goto(out.decode().strip())
    await page.wait_for_url(f"{api_url}{next_path}")
    await expect(page.locator("#session-id")).to_have_text(sid)
    await expect(page.locator("#session-status")).to_have_text("ready")
    terminal = page.locator("#terminal .xterm-rows")
    await expect(terminal).to_contain_text("before-42")
    await expect(page.locator("#term-state")).to_have_text("watching (read-only)")

    await page.fill("#prompt", f"echo hi-$((6*7)); {DONE}")
    await page.click("text=Send prompt")
    await expect(page.locator("#prompt-result")).to_contain_text("sent: job ")
    job_id = (await page.locator("#prompt-result").text_content()).split("job ", 1)[1].strip()
    await expect(terminal).to_contain_text("hi-42")
    job = page.locator(f"#jobs li[data-job='{job_id}']")
    await expect(job.locator(".status")).to_have_text("done")
    assert await job_status(http, office, job_id) == "done"
    await expect(page.locator("#session-status")).to_have_text("ready")

    # read-only sends nothing the person types; taking the keyboard does
    await page.locator("#terminal").click()
    await page.keyboard.type("echo nope\n")
    await page.check("#take-keyboard")
    await expect(page.locator("#term-state")).to_have_text("you have the keyboard")
    await page.locator("#terminal").click()
    await page.keyboard.type("echo typed-$((3*3))")
    await page.keyboard.press("Enter")
    await expect(terminal).to_contain_text("typed-9")
    out = (await http.get(f"/api/offices/{office}/sessions/{sid}/output")).json()["data"]
    assert "nope" not in out

    # with the keyboard, the terminal may take the window's size: the PTY's changes with it
    await expect(page.locator("#term-size")).to_have_text("40×120")  # the session's own
    await page.set_viewport_size({"width": 700, "height": 700})
    await page.click("#fit")
    await expect(page.locator("#term-size")).not_to_have_text("40×120")
    rows, cols = (await page.locator("#term-size").text_content()).split("×")

    async def pty_size_shown() -> bool:  # the resize is an update of its own: ask until it landed
        await page.locator("#terminal").click()
        await page.keyboard.type("stty size")
        await page.keyboard.press("Enter")
        try:
            await expect(terminal).to_contain_text(f"{rows} {cols}", timeout=3000)
            return True
        except AssertionError:
            return False
    await wait_for(pty_size_shown, timeout=30, what="the PTY to take the window's size")
    await page.set_viewport_size({"width": 1280, "height": 900})

    # the keys row: Ctrl+C stops what runs, as it would in a terminal
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/keys",
                        json={"text": "sleep 300; echo slept\r"})
    assert r.status_code == 200
    await page.click("button[data-key='ctrl+c']")
    await expect(terminal).to_contain_text("slept^C")
    await page.locator("#terminal").click()
    await page.keyboard.type("echo after-ctrl-c")
    await page.keyboard.press("Enter")
    await expect(terminal).to_contain_text("after-ctrl-c")
    assert (await terminal.text_content()).count("slept") == 1  # the command line, not its output
    await phone_screenshot(page, shot_path(tmp_path, "console-session.png"))


#: the page's notifications, recorded: the real Notification (permission granted to the
#: context), whose titles are also kept in `window.__notes` for the test to read
RECORD_NOTIFICATIONS = """
    window.__notes = [];
    if (window.Notification) {
        const Real = window.Notification;
        window.Notification = class extends Real {
            constructor(title, options) { super(title, options); window.__notes.push(title); }
        };
    }
"""


async def test_inbox_answers_a_waiting_session(context, http, office, api_url, tmp_path):
    sid = await new_session_id(http, office)
    await context.grant_permissions(["notifications"], origin=api_url)
    await context.add_init_script(RECORD_NOTIFICATIONS)
    page = await context.new_page()
    await log_in(page, http, [office], f"/console/offices/{office}")
    await expect(page.locator(f"article.session[data-session='{sid}']")).to_be_visible()
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                        json={"prompt": f"read -p 'Overwrite the file? (y/n) ' a; echo got-$a; {DONE}"})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]

    item = page.locator(f"#inbox article.waiting[data-session='{sid}']")
    await expect(item.locator(".question")).to_contain_text("Overwrite the file? (y/n)")
    await expect(page.locator("#inbox-count")).to_have_text("1")
    await page.wait_for_function("window.__notes.some((t) => t.includes('is waiting for you'))")
    await phone_screenshot(page, shot_path(tmp_path, "console-office.png"))
    await item.locator("button", has_text="y ⏎").click()

    async def done():
        return await job_status(http, office, job_id) == "done"
    await wait_for(done, what="the job to finish once answered")
    await expect(page.locator("#inbox-count")).to_have_text("0")
    await page.wait_for_function(f"window.__notes.includes('job done: {sid}')")
    await expect(page.locator(f"article.session[data-session='{sid}'] .preview")).to_contain_text("got-y")


async def test_offices_page(context, http, office, tmp_path):
    sid = await new_session_id(http, office)
    page = await context.new_page()
    await log_in(page, http, [office], "/console/")
    card = page.locator(f"article.office[data-office='{office}']")
    await expect(card.locator(".pool")).to_have_text("pool: 1 in use of 6")
    await expect(card.locator(".by-status")).to_contain_text("ready 1")
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                        json={"prompt": "read -p 'Go on? (y/n) ' a"})
    assert r.status_code == 200, r.text
    await expect(card.locator(".waits")).to_contain_text(sid)  # live, from /api/events
    await phone_screenshot(page, shot_path(tmp_path, "console-offices.png"))


@pytest.mark.parametrize("machine", [pinned_version()], indirect=True)
async def test_inbox_allows_a_claude_permission_and_the_tool_runs(context, http, machine,
                                                                   tmp_path):  # noqa: F811
    """A real Claude Code session asks to run Bash: the inbox shows the tool and its command,
    one click on Allow answers it through POST .../answer, and the command runs."""
    office = f"ci-{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/offices", json={"office_id": office, "name": "inbox",
                                              "machine_id": machine.machine_id, "agent": "claude",
                                              "warm_roles": []})
    assert r.status_code == 201, r.text
    machine.standin.clear()
    machine.standin.reply_tool_use("Bash", {"command": "touch from-the-inbox.txt",
                                            "description": "Create the file"})
    machine.standin.reply_text("Created.\n[SEMO:DONE]")
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 201, r.text
    sid, wd = r.json()["session_id"], Path(r.json()["working_dir"])
    page = await context.new_page()
    await log_in(page, http, [office], f"/console/offices/{office}")
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                        json={"prompt": "Create from-the-inbox.txt"})
    job_id = r.json()["job_id"]

    item = page.locator(f"#inbox article.waiting[data-session='{sid}']")
    await expect(item.locator(".kind")).to_have_text("permission: Bash")
    await expect(item.locator(".tool-input")).to_contain_text("touch from-the-inbox.txt")
    await expect(page.locator("#inbox-count")).to_have_text("1")
    assert not (wd / "from-the-inbox.txt").exists()
    await item.locator("button", has_text="Allow").click()

    async def done():
        return await job_status(http, office, job_id) == "done"
    await wait_for(done, timeout=60, what="the job to finish once allowed")
    assert (wd / "from-the-inbox.txt").exists(), "the allowed command ran"
    await expect(page.locator("#inbox-count")).to_have_text("0")
    session = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
    assert session["pending_input"] is None
    await http.delete(f"/api/offices/{office}")
