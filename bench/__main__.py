"""`make bench`: run every benchmark module, print a table, merge into .semo/bench.json.

Each module in MODULES is run as `python -m bench.<module>` in its own process (so one
benchmark's leftovers cannot skew the next) and prints one JSON object, key -> number, as the
last line of its standard output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

MODULES = [
    "bench_monitor",
    "bench_terminal",
    "bench_e2e",
    "bench_answer",
    "bench_webhooks",
    "bench_fleet",
    "bench_worker_restart",
]
TIMEOUT_S = 1800


def main() -> int:
    out_path = Path(".semo/bench.json")
    out_path.parent.mkdir(exist_ok=True)
    results: dict[str, float] = json.loads(out_path.read_text()) if out_path.exists() else {}
    failed = []
    for module in sys.argv[1:] or MODULES:
        started = time.monotonic()
        print(f"== {module}", flush=True)
        proc = subprocess.run([sys.executable, "-m", f"bench.{module}"], capture_output=True,
                              text=True, timeout=TIMEOUT_S)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
        if proc.returncode != 0 or not lines:
            failed.append(module)
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
            continue
        figures = json.loads(lines[-1])
        results.update(figures)
        print(f"   ({time.monotonic() - started:.0f}s)")
        for key, value in figures.items():
            print(f"   {key:<36} {value:>14,.3f}" if isinstance(value, float) else
                  f"   {key:<36} {value!s:>14}")
    out_path.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(f"\nwrote {out_path} ({len(results)} keys)")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
