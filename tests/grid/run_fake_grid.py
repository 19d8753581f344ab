"""Run the small test grid with the fake phases in its own process (for kill and race tests).

Usage: python run_fake_grid.py RESULTS_DIR LEDGER SLEEP_SECONDS [COMPANY_SECONDS]
"""

import sys
from pathlib import Path

from grid_helpers import FAKE_PHASES, small_plan
from transferstats.grid.local import LocalExecutor

if __name__ == "__main__":
    results, ledger, sleep, *company = sys.argv[1:]
    plan = small_plan(Path(results), ledger=ledger, sleep=float(sleep),
                      company=float(company[0]) if company else 0.0)
    LocalExecutor(["cpu"], phases=FAKE_PHASES, show_progress=False, poll_seconds=0.05).run(plan)
