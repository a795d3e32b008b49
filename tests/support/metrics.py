"""Reading Prometheus text as a test does."""

from __future__ import annotations

import re


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric `name` in a Prometheus text exposition."""
    found = []
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
            found.append((labels, float(m.group(2))))
    return found


def total(text: str, name: str, **match: str) -> float:
    return sum(v for labels, v in samples(text, name)
               if all(labels.get(k) == want for k, want in match.items()))


