"""What tripped a newcomer following the README (issue 22), each checked the way they met
it: the API docs in a browser with no network, an office on a machine that does not exist,
the CLI's output piped or followed, its messages without a token or with a garbage one, and
what the install and every start print."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import async_playwright

from dev.embedded import venv_bin
from tests.support.browser import LAUNCH_ARGS, chromium_path
from tests.support.paths import REPO
from tests.support.tokens import MACHINE_ID, token_for
from tests.support.waiting import wait_for

MARKER = "printf '[SEMO:%s]\\n' DONE"


@pytest.fixture
async def browser():
    """Headless Chromium (Debian's, installed if missing) driven by Playwright."""
    executable = await asyncio.to_thread(chromium_path)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=executable, headless=True,
                                            args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def semo_cli(*args: str, env: dict[str, str], cwd: Path | None = None,
                   merge_stderr: bool = False, timeout: float = 60) -> tuple[int, str, str]:
    """The installed `semo` console script, stdout piped as in `semo ... | grep` or a log."""
    proc = await asyncio.create_subprocess_exec(
        str(venv_bin("semo")), *args, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), (err or b"").decode()


@pytest.fixture
def cli_env(api_url, tmp_path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "SEMO_API_URL": api_url, "SEMO_TOKEN": token_for(["*"]),
            "SEMO_HOME": str(tmp_path / "no-dev-json"), "HOME": str(tmp_path)}


# --- 2. /docs and /redoc without internet access -----------------------------------------------


async def test_docs_render_in_a_browser_with_no_network(api_url, browser):
    """Every request that does not go to the API itself fails, as it does offline; the docs
    still show the API's operations (they used to load Swagger UI from a CDN: a blank page)."""
    api_host = urlsplit(api_url).netloc
    elsewhere: list[str] = []

    async def offline(route):
        if urlsplit(route.request.url).netloc == api_host:
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort("internetdisconnected")

    context = await browser.new_context()
    await context.route("**/*", offline)
    page = await context.new_page()
    try:
        await page.goto(f"{api_url}/docs", timeout=60_000)
        ops = page.locator(".opblock-summary-path")
        await ops.first.wait_for(timeout=60_000)
        paths = {(await p.get_attribute("data-path")) or await p.inner_text()
                 for p in await ops.all()}
        assert "/api/offices" in paths and "/api/offices/{office_id}/sessions" in paths, paths
        assert await page.locator(".opblock-tag").count() >= 3  # offices, sessions, jobs, ...

        await page.goto(f"{api_url}/redoc", timeout=60_000)
        operations = page.locator("[data-section-id^='operation/']")
        await operations.first.wait_for(state="attached", timeout=60_000)
        assert await operations.count() >= 10
        await page.locator("h2", has_text="Create Office").first.wait_for(timeout=30_000)
    finally:
        await context.close()
    # the one thing asked for elsewhere is the image of ReDoc's "API docs by Redocly" footer
    # link (built into redoc.standalone.js): a decoration, and the pages above rendered without
    decorations = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
    assert set(elsewhere) <= decorations, f"the docs asked for something outside the API: {elsewhere}"


# --- 3. an office on a machine no client worker registered -------------------------------------


async def test_office_on_an_unregistered_machine_is_a_422_that_records_nothing(
        http, pool, temporal_client, cli_env):
    office = f"t-nomachine-{uuid.uuid4().hex[:8]}"
    body = {"office_id": office, "name": "X", "machine_id": "nosuchmachine", "agent": "shell"}

    async def recorded() -> tuple[int, int]:
        async with pool.connection() as conn:
            offices = (await (await conn.execute(
                "select count(*) from offices where id = %s", (office,))).fetchone())[0]
            commands = (await (await conn.execute(
                "select count(*) from agent_commands where office_id = %s", (office,))).fetchone())[0]
        return offices, commands

    r = await http.post("/api/offices", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    detail = r.json()["detail"]
    # the same words as `session create` on such a machine: one rule, one message
    assert detail == ("machine 'nosuchmachine' has no client worker registered; start one there "
                      "with `SEMO_MACHINE_ID=nosuchmachine semo worker client`"), detail
    assert await recorded() == (0, 0)
    workflows = [w.id async for w in temporal_client.list_workflows(f"OfficeId='{office}'")]
    assert workflows == [], "no pool (and no warm session) was started"

    code, out, err = await semo_cli("office", "create", "X", "--id", office, "--machine",
                                    "nosuchmachine", "--agent", "shell", env=cli_env)
    assert (code, out) == (1, ""), (code, out, err)
    assert "no client worker registered" in err and "(422)" in err and "semo worker client" in err
    assert await recorded() == (0, 0)

    # and a machine that is registered still works, through the same check
    body.update(machine_id=MACHINE_ID, warm_roles=[])
    r = await http.post("/api/offices", json=body)
    assert r.status_code == 201, r.text
    await http.delete(f"/api/offices/{office}")


# --- 5. `semo session list` piped -----------------------------------------------------------------


async def test_session_list_piped_prints_whole_values_tab_separated(http, office, cli_env):
    sids = []
    for role in ("BE", "QA"):
        r = await http.post(f"/api/offices/{office}/sessions", json={"role": role})
        assert r.status_code == 201, r.text
        sids.append(r.json()["session_id"])
    env = {**cli_env, "COLUMNS": "80"}  # what a pipe or a log gets
    code, out, err = await semo_cli("session", "list", "--office", office, env=env)
    assert code == 0, err
    assert "…" not in out
    header, *rows = out.splitlines()
    assert header.split("\t") == ["SESSION", "ROLE", "AGENT", "STATUS", "JOB", "RESTARTS",
                                  "CIRCUIT", "MACHINE", "LAST ACTIVITY"]
    cells = [row.split("\t") for row in rows]
    assert sorted(c[0] for c in cells) == sorted(sids)  # whole ids, copyable
    assert all(len(c) == 9 and c[3] == "ready" and c[7] == MACHINE_ID for c in cells), cells
    # cut -f1 works: the first column of every line is an id that the API knows
    for c in cells:
        assert (await http.get(f"/api/offices/{office}/sessions/{c[0]}")).status_code == 200
    code, out, err = await semo_cli("office", "list", env=env)
    assert code == 0 and "…" not in out
    assert any(line.split("\t")[0] == office for line in out.splitlines())
    for sid in sids:
        await http.delete(f"/api/offices/{office}/sessions/{sid}")


# --- 6. the smaller ones ------------------------------------------------------------------------


async def test_office_create_says_which_warm_sessions_it_starts(http, cli_env):
    office = f"t-warm-{uuid.uuid4().hex[:8]}"
    code, out, err = await semo_cli("office", "create", "W", "--id", office, "--machine",
                                    MACHINE_ID, "--agent", "shell", env=cli_env)
    assert code == 0, err
    assert "warm roles: FE, BE, QA" in out
    assert "no --warm given" in err and "FE, BE, QA" in err and "--no-warm" in err

    code, out, err = await semo_cli("office", "create", "W", "--id", office, "--machine",
                                    MACHINE_ID, "--agent", "shell", "--no-warm", env=cli_env)
    assert code == 1 and "already exists (409)" in err, (code, err)
    assert "hint:" in err and "--id" in err and f"semo office delete {office} --yes" in err

    other = f"t-warm-{uuid.uuid4().hex[:8]}"
    code, out, err = await semo_cli("office", "create", "W", "--id", other, "--machine",
                                    MACHINE_ID, "--agent", "shell", "--warm", "BE", env=cli_env)
    assert code == 0 and "warm roles: BE" in out and "no --warm given" not in err
    for o in (office, other):
        assert (await http.delete(f"/api/offices/{o}")).status_code == 200


async def test_without_a_token_the_token_is_what_is_missing(cli_env, tmp_path):
    """From a folder with no dev.json and no SEMO_OFFICE: the first thing to fix is the
    token (without one nothing works), not the office."""
    env = {k: v for k, v in cli_env.items() if k not in ("SEMO_TOKEN", "SEMO_HOME")}
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    for args in (["session", "list"], ["session", "create", "--role", "BE"],
                 ["session", "show", "be-1"], ["session", "prompt", "be-1", "ls"],
                 ["job", "show", "job-1"]):
        code, out, err = await semo_cli(*args, env=env, cwd=folder)
        assert code == 2, (args, code, err)
        assert "no API token" in err and "office" not in err.split("no API token")[0], (args, err)


async def test_a_garbage_token_gets_a_clear_message(cli_env, http):
    for garbage in ("not-a-jwt", "a.b.c"):
        code, out, err = await semo_cli("office", "list", env={**cli_env, "SEMO_TOKEN": garbage})
        assert code == 1, err
        assert "DecodeError" not in err
        assert "not a readable JWT" in err and "header.payload.signature" in err, err
        assert "from SEMO_TOKEN" in err  # and the hint says where it came from
    r = await http.get("/api/offices", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401 and "not a readable JWT" in r.json()["detail"]


async def test_output_follow_starts_at_the_tail_and_keeps_status_lines_apart(
        http, office, cli_env):
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    sid = r.json()["session_id"]
    prompt = "; ".join(f"echo old-$((1000+{i}))" for i in range(30)) + f"; {MARKER}"
    job = (await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                           json={"prompt": prompt})).json()["job_id"]

    async def output() -> str:
        r = await http.get(f"/api/offices/{office}/sessions/{sid}/output")
        return r.json()["data"]

    async def done_and_stored() -> bool:
        j = (await http.get(f"/api/offices/{office}/jobs/{job}")).json()
        return j["status"] == "done" and (await output()).rstrip().endswith("$")
    await wait_for(done_and_stored, what="the first job, stored up to the next shell prompt")

    # stdout and stderr into one pipe, as a terminal shows them
    proc = await asyncio.create_subprocess_exec(
        str(venv_bin("semo")), "session", "output", sid, "--office", office, "--follow",
        env=cli_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: list[str] = []
    try:
        async def tail_printed() -> bool:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            seen.append(line.decode())
            return "old-1029" in seen[-1]
        await wait_for(tail_printed, timeout=60, what="the tail of the output")
        r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                            json={"prompt": f"echo new-$((6*7)); {MARKER}"})
        job = r.json()["job_id"]
        await wait_for(lambda: _job_done(http, office, job), what="the second job")
        await wait_for(lambda: _printed(output, "new-42"), what="the output stored")
        await http.delete(f"/api/offices/{office}/sessions/{sid}")
        rest = await asyncio.wait_for(proc.stdout.read(), 60)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = "".join(seen) + rest.decode()
    lines = out.splitlines()

    # like tail -f: the last lines of what was there, not all of it from byte 0
    old = [ln for ln in lines if ln.startswith("old-")]
    assert "old-1029" in old and "old-1000" not in old and len(old) < 10, old
    assert "new-42" in lines
    # every status line is a line of its own, after a shell prompt ("$ ") too
    status = [ln for ln in lines if "── session" in ln]
    assert status and all(ln.startswith("── session") for ln in status), status
    assert status[-1].endswith(": terminated"), status

    # --since 0 replays it all
    code, out, _ = await semo_cli("session", "output", sid, "--office", office, "--follow",
                                  "--since", "0", env=cli_env, merge_stderr=True)
    assert code == 0 and "old-1000" in out.splitlines() and "new-42" in out.splitlines()


async def _job_done(http, office, job_id) -> bool:
    return (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()["status"] == "done"


async def _printed(read, what: str) -> bool:
    return what in await read()


def test_install_has_no_package_data_warnings(tmp_path):
    """Building the package (what `pip install` does) warns about nothing of ours; the
    migrations are in the wheel, where `semo migrate` reads them."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "db.migrations" not in log and "BuildBackendWarning" not in log, log[-3000:]
    import zipfile

    [wheel] = tmp_path.glob("semo_sessions-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "db/migrations/0001_core.sql" in names, names


def test_starting_postgres_prints_no_runtime_dir_warning(tmp_path):
    """Without XDG_RUNTIME_DIR (containers, CI, ssh) nothing warns about it at start."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    code = ("from dev.embedded import _pg_bin, init_postgres; import sys; "
            "assert _pg_bin('postgres').exists(); init_postgres(__import__('pathlib').Path(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code, str(tmp_path / "pg")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RuntimeDirWarning" not in proc.stderr and "XDG_RUNTIME_DIR" not in proc.stderr, \
        proc.stderr
