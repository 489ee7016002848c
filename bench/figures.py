"""What benchmarks report: latency percentiles, and the table and JSON they publish."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)

    return {
        "count": len(ordered),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1], 2),
    }


def publish(path: Path, results: list[dict[str, Any]], table: str) -> None:
    """Print the table; write the results as JSON and the table as Markdown beside it."""
    print(table)
    write(path, {"results": results}, table)


def write(path: Path, document: dict[str, Any], markdown: str) -> None:
    """`document` as JSON at `path`, `markdown` beside it (same name, .md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown + "\n")
    print(f"written: {path} and {path.with_suffix('.md')}")
