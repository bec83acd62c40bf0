"""`python -m bench` (`make bench`): every benchmark, each beside its reference, in one run.

Set `BENCH_PAIRS` to change the size (default: 1M pairs, 2M events, for each); `BENCH_SDK_EVENTS`
and `BENCH_EXPORTER_EVENTS` size the SDK and exporter benchmarks, `BENCH_HISTORY_CALLS` (and
`BENCH_HISTORY_USERS`, `BENCH_HISTORY_DAYS`) the history benchmark; `BENCH_BUDGET_*` the shared
budgets benchmark (`bench/budgets.py`) and `BENCH_ALERTS_*` the alerts benchmark (`bench/alerts.py`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import alerts, budgets, exporters, history, ingest, processor, scaled, sdk, soak


def main() -> int:
    """Run the benchmarks and write their figures to bench/out/results.json."""
    results = {
        "processor": processor.run(),
        "ingest": ingest.run(),
        "sdk": sdk.run(),
        "exporters": exporters.run(),
        "scaled": scaled.run(),
        "history": history.run(),
        "soak": soak.run(),
        "budgets": budgets.run(),
        "alerts": alerts.run(),
    }
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"figures written to {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
