"""The console's Changes view in a real browser (Debian's Chromium through Playwright), on a
real repository with a bare remote: a person sees the files and the coloured diff with line
numbers, comments on two lines, sends the review as one job, and hands the branch off; at
desktop and phone widths (screenshots kept where SEMO_CONSOLE_SCREENSHOTS says)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.support.api_calls import job_when, new_session, send_prompt, session_when
from tests.support.browser import LAUNCH_ARGS, chromium_path
from tests.support.git import new_repo_office, run as git
from tests.support.tokens import token_for

expect.set_options(timeout=20_000)  # a loaded 2-core machine
PHONE = {"width": 390, "height": 844}


@pytest.fixture
async def browser():
    executable = await asyncio.to_thread(chromium_path)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=executable, headless=True,
                                            args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


def shot(tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("SEMO_CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


async def test_changes_view_review_and_hand_off(browser, http, settings, tmp_path: Path) -> None:
    office, _, remote = await new_repo_office(http, settings, tmp_path)
    try:
        sid = (await new_session(http, office))["session_id"]
        job = await send_prompt(http, office, sid, "printf 'changed\\n' >> README.md; "
                                "printf 'one\\ntwo\\n' > notes.txt; echo [SEMO:DONE]")
        await job_when(http, office, job, "done")

        page_path = f"/console/offices/{office}/sessions/{sid}"
        r = await http.post("/api/console/login-codes", json={"next": page_path},
                            headers={"Authorization": f"Bearer {token_for([office], sub='rev')}"})
        assert r.status_code == 201, r.text
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        await page.goto(r.json()["url"])
        await page.wait_for_url(re.compile(re.escape(page_path) + "$"))

        files = page.locator("#change-files li")
        await expect(files).to_have_count(2)
        await expect(files.filter(has_text="README.md")).to_contain_text("+1")
        await expect(files.filter(has_text="notes.txt")).to_contain_text("+2")
        readme = page.locator('.diff-file[data-path="README.md"]')
        added = readme.locator("tr.d-add")
        await expect(added).to_have_count(1)
        await expect(added).to_contain_text("changed")
        await expect(added.locator("td.ln").nth(1)).to_have_text("3")
        assert await added.evaluate("r => getComputedStyle(r.cells[2]).backgroundColor") \
            == "rgb(230, 255, 236)", "an added line is green"

        await added.click()
        await page.get_by_label("comment on README.md:3").fill("Say what changed")
        await page.get_by_role("button", name="Add comment").click()
        await page.locator('.diff-file[data-path="notes.txt"] tr[data-line="2"]').click()
        await page.get_by_label("comment on notes.txt:2").fill("Two is too many")
        await page.get_by_role("button", name="Add comment").click()
        await expect(page.locator("#review-count")).to_have_text("2 comments to send.")
        await expect(readme.locator("tr.comment")).to_contain_text("Say what changed")
        await page.screenshot(path=str(shot(tmp_path, "console-changes.png")), full_page=True)

        await page.get_by_role("button", name="Send review").click()
        await expect(page.locator("#review-count")).to_contain_text("Sent as job")
        review_job = (await page.locator("#review-count").text_content() or "").split()[-1] \
            .rstrip(".")
        prompt = (await http.get(f"/api/offices/{office}/jobs/{review_job}")).json()["prompt"]
        assert "README.md:3\n   | changed\n   Say what changed" in prompt
        assert "notes.txt:2\n   | two\n   Two is too many" in prompt

        # on a phone: nothing wider than the screen but the diff, which scrolls on its own
        await page.set_viewport_size(PHONE)
        await page.locator("#changes").scroll_into_view_if_needed()
        overflow = await page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"
        await page.screenshot(path=str(shot(tmp_path, "console-changes-phone.png")))

        r = await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")
        assert r.status_code == 200, r.text
        await session_when(http, office, sid, "ready")
        await page.get_by_label("commit message").fill("Notes, from the console")
        await page.get_by_role("button", name="Hand off").click()
        result = page.locator("#handoff-result")
        await expect(result).to_contain_text("pushed to origin")
        branch = (await result.text_content() or "").split()[2]
        assert git("log", "-1", "--format=%s", branch, cwd=remote) == "Notes, from the console"
        await page.set_viewport_size({"width": 1280, "height": 900})
        await expect(page.locator("#changes-summary")).to_contain_text("1 commit")
        await context.close()
    finally:
        r = await http.delete(f"/api/offices/{office}")
        assert r.status_code == 200, r.text
