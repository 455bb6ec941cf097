"""``make bench``: run every benchmark, then print all their figures as one table.

Each script runs in its own process (so one's load does not skew another's),
prints its own table, and adds its rows to a shared JSON file; this driver
prints the merged table last and keeps it in ``.local/bench/report.txt``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from report import format_table, read_json

BENCH_DIR = Path(__file__).resolve().parent
SCRIPTS = (
    "service_bench.py",
    "banstore_bench.py",
    "banlist_bench.py",
    "rescan_bench.py",
    "operator_bench.py",
    "takeover_bench.py",
    "takeover_node_bench.py",
    "propagation_bench.py",
    "flood_bench.py",
    "scrape_bench.py",
    "upgrade_bench.py",
)
REPORT = BENCH_DIR.parent / ".local" / "bench" / "report.txt"


def main() -> int:
    """Run the benchmarks in order; exit non-zero if any of them failed."""
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        results = Path(work) / "rows.json"
        for script in SCRIPTS:
            print(f"== {script}", flush=True)
            completed = subprocess.run(
                [sys.executable, str(BENCH_DIR / script), "--json", str(results)], check=False
            )
            if completed.returncode != 0:
                failed.append(script)
        table = format_table(read_json(results))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(table + "\n")
    print(f"\n== all figures (also in {REPORT.relative_to(BENCH_DIR.parent)})\n{table}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
