"""Office permission rules in Claude Code's rule syntax, matched against a tool request.

    Bash                      any Bash command
    Bash(npm test)            exactly `npm test`
    Bash(git status:*)        commands starting `git status` (`git status -s`)
    Edit(src/**)  Read(*.md)  a file tool on a path matching the glob (relative to the
                              session's working dir; `**` spans folders, `*` does not)
    WebFetch(domain:x.com)    a fetch of that host (or a subdomain)
    Read                      any use of the tool

Deny wins over allow. An allow rule never matches a Bash command that chains or
substitutes others (`;`, `&&`, `|`, `$(...)`, redirections, newlines): `Bash(git status:*)`
must not let `git status; rm -rf ~` through. A deny rule matches when any part of such a
command matches. Pure functions, shared by the API (checking rules) and the client worker
(applying them).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

MAX_RULES = 200
MAX_RULE_LENGTH = 500
_RULE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\((.+)\))?$", re.S)
_CHAINING = re.compile(r"[;&|`\n<>]|\$\(")
_SPLIT = re.compile(r"\s*(?:;|&&|\|\||\||\n)\s*")
PATH_FIELDS = ("file_path", "path", "notebook_path")


def parse_rule(rule: str) -> tuple[str, str | None]:
    """(tool, specifier or None); ValueError saying what is wrong."""
    if not isinstance(rule, str) or not rule.strip():
        raise ValueError("a rule is a non-empty string such as 'Bash(git status:*)'")
    if len(rule) > MAX_RULE_LENGTH:
        raise ValueError(f"a rule is at most {MAX_RULE_LENGTH} characters")
    m = _RULE_RE.match(rule.strip())
    if m is None:
        raise ValueError(f"{rule[:80]!r} is not a rule: write Tool or Tool(specifier), "
                         "e.g. Bash, Bash(npm test), Bash(git status:*), Edit(src/**)")
    return m[1], m[2].strip() if m[2] else None


def check_rules(rules: dict[str, Any]) -> dict[str, list[str]]:
    """`{allow: [...], deny: [...]}` with each rule checked; ValueError otherwise."""
    if not isinstance(rules, dict) or set(rules) - {"allow", "deny"}:
        raise ValueError("permission_rules is {allow: [rule], deny: [rule]}")
    out: dict[str, list[str]] = {}
    for key in ("allow", "deny"):
        listed = rules.get(key) or []
        if not isinstance(listed, list) or len(listed) > MAX_RULES:
            raise ValueError(f"permission_rules.{key} is a list of at most {MAX_RULES} rules")
        for rule in listed:
            parse_rule(rule)
        out[key] = [r.strip() for r in listed]
    return out


def _glob_re(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _relative(path: str, working_dir: str | None) -> str:
    p = PurePosixPath(path)
    if p.is_absolute() and working_dir:
        try:
            return p.relative_to(working_dir).as_posix()
        except ValueError:
            return p.as_posix()
    return p.as_posix()


def _command_matches(spec: str, command: str) -> bool:
    command = " ".join(command.split())
    if spec.endswith(":*"):  # a prefix, as Claude Code matches it
        return command.startswith(" ".join(spec[:-2].split()))
    return command == " ".join(spec.split())


def matches(rule: str, tool: str, tool_input: Any, working_dir: str | None = None,
            *, deny: bool = False) -> bool:
    name, spec = parse_rule(rule)
    if name != tool:
        return False
    if spec is None:
        return True
    args = tool_input if isinstance(tool_input, dict) else {}
    if tool == "Bash":
        command = args.get("command")
        if not isinstance(command, str):
            return False
        if deny:
            return any(_command_matches(spec, part) for part in [command, *_SPLIT.split(command)])
        return not _CHAINING.search(command) and _command_matches(spec, command)
    if spec.startswith("domain:"):
        url = args.get("url")
        host = (urlsplit(url).hostname or "") if isinstance(url, str) else ""
        want = spec[len("domain:"):].lower()
        return host == want or host.endswith("." + want)
    path = next((args[f] for f in PATH_FIELDS if isinstance(args.get(f), str)), None)
    if path is None:
        return False
    target = path if spec.startswith("/") else _relative(path, working_dir)
    if not spec.startswith("/") and target.startswith(("/", "../")):
        return False  # outside the working dir: a relative rule does not reach it
    return bool(_glob_re(spec).match(target))


def decide(rules: dict[str, Any] | None, tool: str, tool_input: Any,
           working_dir: str | None = None) -> tuple[str, str] | None:
    """("deny" | "allow", the rule) for a request the office's rules answer, else None."""
    if not rules:
        return None
    for rule in rules.get("deny") or []:
        if matches(rule, tool, tool_input, working_dir, deny=True):
            return "deny", rule
    for rule in rules.get("allow") or []:
        if matches(rule, tool, tool_input, working_dir):
            return "allow", rule
    return None
