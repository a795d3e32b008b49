"""`semo session changes|review|handoff` against the real stack and real git: what a person
types, what they see, and what happens on the remote."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.changes import read_comments
from tests.support.api_calls import job_when, new_session, send_prompt
from tests.support.cli import as_json
from tests.support.git import new_repo_office, run as git


async def test_changes_review_and_handoff_from_the_command_line(semo, http, settings,
                                                                tmp_path: Path) -> None:
    office, _, remote = await new_repo_office(http, settings, tmp_path)
    try:
        await _walk_through(semo, http, office, remote, tmp_path)
    finally:  # its terminals end with it
        await http.delete(f"/api/offices/{office}")


async def _walk_through(semo, http, office: str, remote: Path, tmp_path: Path) -> None:
    sid = (await new_session(http, office))["session_id"]
    job = await send_prompt(http, office, sid, "printf 'more\\n' >> README.md; echo [SEMO:DONE]")
    await job_when(http, office, job, "done")
    who = f"{office}/{sid}"

    diff = await semo("session", "changes", who)
    assert "+more" in diff.stdout and "README.md" in diff.stdout
    assert "1 file(s) changed" in diff.stderr
    stat = await semo("session", "changes", who, "--stat")
    assert "modified" in stat.stdout and "+1 -0" in stat.stdout and "+more" not in stat.stdout
    data = as_json(await semo("session", "changes", who, "README.md", "--json"))
    assert [f["path"] for f in data["files"]] == ["README.md"]

    comments = tmp_path / "review.txt"
    comments.write_text("Close.\nREADME.md:3: Say more\n  about it\n")
    sent = await semo("session", "review", who, str(comments), "--json")
    job_id = as_json(sent)["job_id"]
    prompt = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()["prompt"]
    assert "Close." in prompt and "README.md:3\n   | more\n   Say more\n   about it" in prompt
    await semo("session", "cancel", who)

    bad = tmp_path / "bad.txt"
    bad.write_text("README.md:40: nowhere\n")
    refused = await semo("session", "review", who, str(bad), code=1)
    assert "line 40 is not in its diff" in refused.stderr

    done = await semo("session", "handoff", who, "-m", "More README")
    branch = git("for-each-ref", "--format=%(refname:short)", "refs/heads/semo/", cwd=remote)
    assert f"branch {branch} at" in done.stdout and "pushed to origin" in done.stdout
    assert git("log", "-1", "--format=%s", branch, cwd=remote) == "More README"


def test_a_comments_file_is_lines_or_json() -> None:
    assert read_comments("a.py:3: fix\n b.py:x\n") == {
        "comments": [{"path": "a.py", "line": 3, "text": "fix\nb.py:x"}]}
    assert read_comments('[{"path": "a", "line": 1, "text": "t"}]') == {
        "comments": [{"path": "a", "line": 1, "text": "t"}]}
    with pytest.raises(ValueError, match="PATH:LINE: comment"):
        read_comments("just words\n")
