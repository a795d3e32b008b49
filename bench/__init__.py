"""Benchmarks run by `make bench` (bench/__main__.py)."""

from __future__ import annotations

import sys


def report_goals(figures: dict, goals: dict[str, tuple[str, float]]) -> None:
    """Say on stderr, for each goal a figure was measured for, whether it is met."""
    for key, (op, goal) in goals.items():
        if key in figures:
            met = figures[key] >= goal if op == ">=" else figures[key] <= goal
            print(f"{key} = {figures[key]} (goal {op} {goal}): {'met' if met else 'MISSED'}",
                  file=sys.stderr)
