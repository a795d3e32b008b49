"""The console points of issue 30, in Chromium (Debian's, driven by Playwright), at a
desktop's width and a phone's: previews filled on load, the machines in the New office
form, office cards in order, a terminal readable on a phone without taking the keyboard,
and the small things (the breadcrumb's office name, Cancel job only while a job runs,
"1 event", /favicon.ico). Screenshots go to SEMO_CONSOLE_SCREENSHOTS, else the test's tmp."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.support.api_calls import job_when, new_session, send_prompt
from tests.support.browser import LAUNCH_ARGS, chromium_path
from tests.support.tokens import MACHINE_ID, token_for
from tests.support.waiting import wait_for
from worker.client import register_machine

expect.set_options(timeout=20_000)  # live streams on a loaded 2-core machine
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
MARKER = "printf '[SEMO:%s]\\n' DONE"


@pytest.fixture(autouse=True)
async def office_deleted_after(http, office):
    """Each test's office goes with its sessions: live terminals of the in-process worker
    would otherwise outlive the test."""
    yield
    r = await http.delete(f"/api/offices/{office}")
    assert r.status_code in (200, 404), r.text


@pytest.fixture
async def browser():
    executable = await asyncio.to_thread(chromium_path)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser):
    context = await browser.new_context(viewport=DESKTOP)
    yield await context.new_page()
    await context.close()


async def log_in(page: Page, http, office_ids: list[str], next_path: str) -> None:
    token = token_for(office_ids, sub="console-viewer")
    r = await http.post("/api/console/login-codes", json={"next": next_path},
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    await page.goto(r.json()["url"])
    await page.wait_for_url(f"**{next_path}")


def shot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SEMO_CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def shots(page: Page, tmp_path: Path, name: str) -> None:
    """Desktop and phone screenshots; on the phone nothing is wider than the screen."""
    folder = shot_dir(tmp_path)
    await page.set_viewport_size(DESKTOP)
    await page.screenshot(path=str(folder / f"{name}-desktop.png"))
    await page.set_viewport_size(PHONE)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.wait_for_function("document.documentElement.scrollWidth <= window.innerWidth")
    await page.screenshot(path=str(folder / f"{name}-phone.png"))


async def stored(http, office: str, sid: str, text: str) -> None:
    async def found():
        out = (await http.get(f"/api/offices/{office}/sessions/{sid}/output")).json()["data"]
        return text in out
    await wait_for(found, what=f"{text!r} in the stored output")


async def test_previews_show_each_screen_when_the_page_loads(page, http, office, tmp_path):
    sessions = [(await new_session(http, office, role=role))["session_id"] for role in ("BE", "QA")]
    for n, sid in enumerate(sessions):
        r = await http.post(f"/api/offices/{office}/sessions/{sid}/keys",
                            json={"text": f"echo printed-before-$((40+{n}))\r"})
        assert r.status_code == 200, r.text
        await stored(http, office, sid, f"printed-before-{40 + n}")

    # nothing is printed after the page opens: what the previews show came with the page
    await log_in(page, http, [office], f"/console/offices/{office}")
    for n, sid in enumerate(sessions):
        preview = page.locator(f"article.session[data-session='{sid}'] .preview")
        await expect(preview).to_contain_text(f"printed-before-{40 + n}")
    await shots(page, tmp_path, "office-previews")


async def test_new_office_form_offers_the_machines_and_cards_are_in_name_order(
        page, http, pool, settings, tmp_path, monkeypatch, deleted_offices):
    # a second machine that has no `claude`, as its worker registered it
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to("/bin/bash")
    monkeypatch.setenv("PATH", str(bin_dir))
    other = f"noclaude-{uuid.uuid4().hex[:8]}"
    await register_machine(pool, settings.model_copy(update={"machine_id": other}))
    monkeypatch.undo()

    tag = uuid.uuid4().hex[:6]
    for name in (f"zeta {tag}", f"Alpha {tag}", f"mid {tag}"):
        office = f"t-{uuid.uuid4().hex[:10]}"
        deleted_offices.append(office)
        r = await http.post("/api/offices", json={"office_id": office, "name": name,
                                                  "machine_id": MACHINE_ID, "agent": "shell",
                                                  "warm_roles": []})
        assert r.status_code == 201, r.text
    try:
        await log_in(page, http, deleted_offices, "/console/")
        cards = page.locator("article.office header a")
        await expect(cards).to_have_count(3)
        assert await cards.all_inner_texts() == [f"Alpha {tag}", f"mid {tag}", f"zeta {tag}"]

        await page.click("#create-office summary")
        machines = page.locator("#machine-select option")
        await expect(machines.filter(has_text=other)).to_have_count(1)
        await expect(page.locator("#machine-select")).to_have_value(MACHINE_ID)  # this machine's
        await expect(page.locator("#agent-select option[value=shell]")).to_be_enabled()
        await page.select_option("#machine-select", other)
        claude = page.locator("#agent-select option[value=claude]")
        await expect(claude).to_have_text("claude (not installed there)")
        await expect(claude).to_be_disabled()
        await expect(page.locator("#agent-select")).to_have_value("shell")
        await expect(page.locator("#machine-facts")).to_contain_text("0 live sessions")

        new_id = f"t-{uuid.uuid4().hex[:10]}"
        deleted_offices.append(new_id)
        await page.fill("input[name=name]", f"beta {tag}")
        await page.fill("input[name=office_id]", new_id)
        await page.select_option("#machine-select", MACHINE_ID)
        await page.select_option("#agent-select", "shell")
        await page.click("text=Create office")
        await expect(cards).to_have_count(4)
        await expect(cards).to_have_text([f"Alpha {tag}", f"beta {tag}", f"mid {tag}",
                                          f"zeta {tag}"])
        await expect(page.locator("#machine-select")).to_have_value(MACHINE_ID)  # reset to it
        created = (await http.get(f"/api/offices/{new_id}")).json()
        assert (created["machine_id"], created["agent"]) == (MACHINE_ID, "shell")
        await shots(page, tmp_path, "offices-form")
    finally:
        async with pool.connection() as conn:
            await conn.execute("delete from client_machines where id = %s", (other,))


@pytest.fixture
async def deleted_offices(http):
    offices: list[str] = []
    yield offices
    for office_id in offices:
        await http.delete(f"/api/offices/{office_id}")


@pytest.fixture
async def phone(browser):
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                        device_scale_factor=2)
    yield await context.new_page()
    await context.close()


async def test_the_terminal_is_readable_on_a_phone_without_the_keyboard(
        phone, http, office, tmp_path):
    page = phone
    sid = (await new_session(http, office))["session_id"]
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/keys",
                        json={"text": "printf 'x%.0s' {1..105}; echo END-OF-LINE\r"})
    assert r.status_code == 200, r.text
    await stored(http, office, sid, "END-OF-LINE")

    await log_in(page, http, [office], f"/console/offices/{office}/sessions/{sid}")
    await expect(page.locator("#term-state")).to_have_text("watching (read-only)")
    await expect(page.locator("#term-size")).to_have_text("40×120")
    rows = page.locator("#terminal .xterm-rows")
    await expect(rows).to_contain_text("END-OF-LINE")
    end = rows.locator("div", has_text="END-OF-LINE").last

    async def right_edge() -> float:
        return await end.evaluate("""(row) => {
            const range = document.createRange();
            const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
            let last = null;
            while (walker.nextNode()) if (walker.currentNode.textContent.trim()) last = walker.currentNode;
            range.selectNodeContents(last);
            return range.getBoundingClientRect().right;
        }""")

    assert await right_edge() > PHONE["width"], "the end of a 116-column line is off a phone"
    await page.screenshot(path=str(shot_dir(tmp_path) / "terminal-phone-start.png"))
    # a finger swiping left on the terminal (a touch gesture, as a phone's browser gets it)
    # brings the rest of the line into view
    box = await page.locator("#terminal").bounding_box()
    touch = await page.context.new_cdp_session(page)
    x, y = box["x"] + box["width"] * 0.9, box["y"] + 60
    for _ in range(5):
        await touch.send("Input.dispatchTouchEvent",
                         {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
        for step in range(1, 16):
            await touch.send("Input.dispatchTouchEvent",
                             {"type": "touchMove", "touchPoints": [{"x": x - 15 * step, "y": y}]})
        await touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        if await right_edge() <= PHONE["width"]:
            break
    edge = await right_edge()
    assert 0 < edge <= PHONE["width"], f"the line's end is at {edge}px on a {PHONE['width']}px screen"
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert await page.locator("#take-keyboard").is_checked() is False
    await page.screenshot(path=str(shot_dir(tmp_path) / "terminal-phone-scrolled.png"))


async def test_session_page_small_things(page, http, office, tmp_path):
    sid = (await new_session(http, office))["session_id"]
    job = await send_prompt(http, office, sid, f"echo one; {MARKER}")
    await job_when(http, office, job, "done")
    events = (await http.get(f"/api/offices/{office}/jobs/{job}")).json()["events"]
    assert len(events) == 1, events

    await log_in(page, http, [office], f"/console/offices/{office}/sessions/{sid}")
    # the breadcrumb names the office as its own page does: by name
    await expect(page.locator(".crumbs a").nth(1)).to_have_text("test office")
    await page.goto(page.url.rsplit("/sessions/", 1)[0])
    await expect(page.locator(".crumbs span")).to_have_text("test office")
    await page.go_back()

    item = page.locator(f"#jobs li[data-job='{job}']")
    await expect(item.locator("summary")).to_have_text("1 event")
    cancel = page.locator("#cancel")
    await expect(cancel).to_be_hidden()  # nothing to cancel on a ready session

    busy = await send_prompt(http, office, sid, "sleep 600")
    await expect(page.locator("#session-status")).to_have_text("busy")
    await expect(cancel).to_be_visible()
    await shots(page, tmp_path, "session-busy")
    await page.set_viewport_size(DESKTOP)
    await cancel.click()
    await expect(page.locator("#session-status")).to_have_text("ready")
    await expect(cancel).to_be_hidden()
    assert (await http.get(f"/api/offices/{office}/jobs/{busy}")).json()["status"] == "cancelled"

    r = await page.request.get(page.url.split("/console/")[0] + "/favicon.ico")
    assert r.status == 200 and r.headers["content-type"] == "image/x-icon"
    assert (await r.body())[:4] == b"\x00\x00\x01\x00"  # an icon file
