"""Where code lives: every SQL statement is in `db/` (named functions per table or concern),
so a query is written once and a schema change is made in one package. The import arrows are
checked by import-linter (`lint-imports`, contracts in pyproject.toml), run by `make test`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support.paths import REPO

ROOT = REPO  # the repository
PACKAGES = ["api", "activities", "cli", "commands", "dev", "semo", "worker", "workflows"]

#: the start of a statement, not prose: "select … from", "insert into", "update t set", ...
SQL = re.compile(
    r"^\s*(select\s.*\sfrom\s|insert\s+into\s|update\s+\w+\s+set\s|delete\s+from\s"
    r"|with\s+\w+\s+as\s*(materialized\s*)?\(|listen\s+\w+$|notify\s+\w+|set\s+\w+\s+to\s"
    r"|reset\s+\w+$|select\s+(1|now\(\)|pg_\w+\())",
    re.I | re.S)


def sql_strings(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value[:60]) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and SQL.match(node.value)]


def test_the_pattern_finds_statements_and_leaves_prose():
    assert SQL.match("select status, count(*) from jobs")
    assert SQL.match("\n    insert into agent_commands (id) values (%s)")
    assert SQL.match("update offices set name = %s")
    assert SQL.match("with held as materialized (select 1)")
    assert SQL.match("listen agent_commands") and SQL.match("select 1")
    assert not SQL.match("LISTEN connection lost (%s); reconnecting")
    assert not SQL.match("select a session to attach to")


def test_no_sql_outside_db():
    found = {f"{path.relative_to(ROOT)}:{line}": text
             for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py"))
             for line, text in sql_strings(path)}
    assert not found, f"SQL outside db/ (move it into a named function in db/): {found}"


def test_the_readme_map_matches_the_tree():
    """README, "Where things live": every folder it names exists, and every package folder of
    ours is named."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Where things live"):readme.index("## The `semo` CLI")]
    listed = set(re.findall(r"^([a-z_]+(?:/[a-z_]+)*)/\s", section, re.M))
    assert {p for p in listed if not (ROOT / p).is_dir()} == set(), "named but missing"
    packages = {str(init.parent.relative_to(ROOT)) for pkg in PACKAGES + ["db", "bench"]
                for init in (ROOT / pkg).rglob("__init__.py")}
    assert packages - listed == set(), "packages the README does not name"


def test_every_package_is_packaged():
    """An install that is not editable gets exactly the packages pyproject.toml lists."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for pkg in PACKAGES + ["db", "keeper"] for init in (ROOT / pkg).rglob("__init__.py")}
    assert found - listed == set(), "packages pyproject.toml does not list"
