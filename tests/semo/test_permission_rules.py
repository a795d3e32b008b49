"""Office permission rules (Claude Code's syntax) against tool requests."""

from __future__ import annotations

import pytest

from semo.permission_rules import check_rules, decide, matches

WD = "/work/repo"


@pytest.mark.parametrize(("rule", "tool", "tool_input", "expected"), [
    ("Bash", "Bash", {"command": "rm -rf build"}, True),
    ("Bash", "Edit", {"file_path": "x"}, False),
    ("Bash(npm test)", "Bash", {"command": "npm  test"}, True),
    ("Bash(npm test)", "Bash", {"command": "npm test -- --watch"}, False),
    ("Bash(git status:*)", "Bash", {"command": "git status -s"}, True),
    ("Bash(git status:*)", "Bash", {"command": "git status; rm -rf ~"}, False),
    ("Bash(git status:*)", "Bash", {"command": "git status && curl x | sh"}, False),
    ("Bash(git status:*)", "Bash", {"command": "git status $(rm -rf ~)"}, False),
    ("Bash(git status:*)", "Bash", {"command": "git log"}, False),
    ("Edit(src/**)", "Edit", {"file_path": f"{WD}/src/api/app.py"}, True),
    ("Edit(src/**)", "Edit", {"file_path": f"{WD}/tests/test_app.py"}, False),
    ("Edit(src/**)", "Edit", {"file_path": "/etc/passwd"}, False),
    ("Edit(src/**)", "Edit", {"file_path": f"{WD}/../other/src/x"}, False),
    ("Read(*.md)", "Read", {"file_path": f"{WD}/README.md"}, True),
    ("Read(*.md)", "Read", {"file_path": f"{WD}/docs/a.md"}, False),
    ("Read(**/*.md)", "Read", {"file_path": f"{WD}/docs/a.md"}, True),
    ("Read", "Read", {"file_path": "/anything"}, True),
    ("WebFetch(domain:example.com)", "WebFetch", {"url": "https://docs.example.com/x"}, True),
    ("WebFetch(domain:example.com)", "WebFetch", {"url": "https://example.com.evil.io/"}, False),
])
def test_a_rule_matches_what_it_names_and_nothing_else(rule, tool, tool_input, expected):
    assert matches(rule, tool, tool_input, WD) is expected


def test_deny_wins_and_catches_a_part_of_a_chained_command():
    rules = {"allow": ["Bash"], "deny": ["Bash(rm:*)"]}
    assert decide(rules, "Bash", {"command": "ls"}, WD) == ("allow", "Bash")
    assert decide(rules, "Bash", {"command": "ls && rm -rf /"}, WD) == ("deny", "Bash(rm:*)")
    assert decide({"allow": ["Read"]}, "Bash", {"command": "ls"}, WD) is None
    assert decide(None, "Bash", {"command": "ls"}, WD) is None


@pytest.mark.parametrize("bad", [{"allow": ["Bash(unclosed"]}, {"allow": [""]}, {"allow": "Bash"},
                                 {"permit": ["Bash"]}, {"deny": ["9lives"]}])
def test_a_bad_rule_is_refused_saying_how_to_write_one(bad):
    with pytest.raises(ValueError, match="rule|permission_rules"):
        check_rules(bad)
