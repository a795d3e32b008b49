"""Configuration as a user writes it: SEMO_AGENT_PROFILES in the environment."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from dev.embedded import venv_bin
from semo.errors import ConfigError
from semo.settings import BUILTIN_PROFILES, load_settings


def profiles(monkeypatch, value) -> dict:
    monkeypatch.setenv("SEMO_AGENT_PROFILES", json.dumps(value) if not isinstance(value, str) else value)
    return load_settings().profiles


def test_the_readme_profile_keeps_claude_codes_behaviour(monkeypatch) -> None:
    got = profiles(monkeypatch, {"claude": {"argv": ["/opt/claude/bin/claude"],
                                            "env": {"ANTHROPIC_BASE_URL": "http://gw"}}})
    claude = got["claude"]
    builtin = BUILTIN_PROFILES["claude"]
    assert claude.argv == ["/opt/claude/bin/claude"] and claude.env == {"ANTHROPIC_BASE_URL": "http://gw"}
    assert (claude.kind, claude.monitor, claude.hooks, claude.input_mode) == \
        ("claude", "claude", True, "paste"), "what it does not set comes from the built-in"
    assert claude.dialogs == builtin.dialogs and claude.ready_timeout_s == builtin.ready_timeout_s
    assert got["shell"] == BUILTIN_PROFILES["shell"]


def test_a_new_profile_says_or_shows_what_it_is(monkeypatch) -> None:
    got = profiles(monkeypatch, {
        "cc": {"argv": ["/home/me/.local/bin/claude", "--model", "opus"]},   # inferred
        "reviewer": {"kind": "claude", "argv": ["/usr/local/bin/cc-wrapper"]},
        "zsh": {"argv": ["zsh", "-f"], "env": {"FOO": "1"}},
        "strict": {"argv": ["claude"], "dialogs": {"trust_folder": "fail"}},
    })
    assert got["cc"].kind == "claude" and got["cc"].hooks and got["cc"].monitor == "claude"
    assert got["reviewer"].kind == "claude" and got["reviewer"].input_mode == "paste"
    assert got["zsh"].kind == "shell" and not got["zsh"].hooks
    assert got["zsh"].env == {"PS1": "$ ", "FOO": "1"}, "nested fields merge key by key"
    assert got["strict"].dialogs.trust_folder == "fail" and got["strict"].dialogs.api_key == "fail"


@pytest.mark.parametrize(("value", "named"), [
    ('{"claude": {"argv": "claude"}}', "SEMO_AGENT_PROFILES: claude.argv: Input should be a valid list"),
    ('{"claude": {"argvs": ["claude"]}}', "claude.argvs: Extra inputs are not permitted"),
    ('{"claude": {"dialogs": {"trust_folder": "maybe"}}}', "claude.dialogs.trust_folder"),
    ('{"x": {"kind": "cursor", "argv": ["cursor"]}}', "x.kind"),
    ('{"claude": ', "SEMO_AGENT_PROFILES: not valid JSON"),
    ('["claude"]', "SEMO_AGENT_PROFILES: must be a JSON object"),
])
def test_a_bad_profile_is_an_error_naming_the_field(monkeypatch, value, named) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        profiles(monkeypatch, value)
    assert named in str(err.value)


def test_a_worker_with_a_bad_profile_does_not_start(tmp_path) -> None:
    env = {**os.environ, "SEMO_AGENT_PROFILES": '{"claude": {"argv": "claude"}}',
           "SEMO_HOME": str(tmp_path / ".semo")}
    out = subprocess.run([str(venv_bin("semo")), "worker", "client"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert "SEMO_AGENT_PROFILES: claude.argv: Input should be a valid list" in out.stderr
    assert "Traceback" not in out.stderr
