"""OpenAI's Codex CLI on the client machine: hooks, the screen, start-up screens, typing
prompts, its rollout file. docs/codex.md records what Codex does and what semo makes of it.

The package, one concept a module: `constants` (events, timings, screen marks), `config`
(our hooks and `resume` on its command line), `screen` (reading the screen), `rollout` (its
rollout file: refused turns, usage), `usage` (model responses for the usage tracker),
`driver` (one terminal), `integration` (per worker), `versions` (the CLI versions tested).

The hook transport (relay, server, held decisions), the screen follower and the reading of
a final reply are shared with Claude Code and live in `activities/claude/` for now.
"""

from __future__ import annotations

from activities.codex.driver import CodexDriver
from activities.codex.integration import CodexIntegration

__all__ = ["CodexDriver", "CodexIntegration"]
