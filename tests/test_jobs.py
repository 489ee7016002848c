"""The job worker's process: what it keeps for its whole life is out of garbage collection."""

from __future__ import annotations

import json
import subprocess
import sys

SETTLED = """
import gc, json
from allo import jobs
from allo.triage.assessor import Assessor
Assessor().warm()  # as the worker does before its first job
before = len(gc.get_objects())
jobs.settle_heap()
print(json.dumps({"before": before, "walked": len(gc.get_objects()),
                  "frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold()}))
"""


def test_a_settled_worker_leaves_its_modules_and_models_out_of_every_collection() -> None:
    # In a process of its own: freezing is for the life of the process.
    done = subprocess.run(
        [sys.executable, "-c", SETTLED], capture_output=True, text=True, check=True, timeout=120
    )
    heap = json.loads(done.stdout.strip().splitlines()[-1])
    assert heap["before"] > 20_000
    assert heap["frozen"] >= heap["before"] * 0.9
    assert heap["walked"] < 1_000
    assert tuple(heap["thresholds"]) == (10_000, 10, 10)
