"""`make bench-smoke`: the whole benchmark harness, with tiny numbers, so it cannot rot between full runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PHASES = ("sequential", "c32", "c128", "streaming")
SECTIONS = (
    "sequential, not streamed",
    "concurrency 32 for",
    "concurrency 128 for",
    "streaming /v1/chat/completions (",
    "streaming /v1/responses (",
    "streams held open against a slow upstream",
    "targets (ratios from this run)",
)


def run_smoke(out: Path) -> tuple[str, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    document: dict[str, Any] = json.loads(out.read_text())
    return done.stdout, document


def test_the_smoke_run_prints_every_table_and_writes_the_same_numbers_as_json(tmp_path: Path) -> None:
    table, document = run_smoke(tmp_path / "results.json")

    for section in SECTIONS:
        assert section in table
    assert document["meta"]["smoke"] is True
    assert set(document["paths"]) >= {"A", "B"}
    for path, results in document["paths"].items():
        for phase in PHASES:
            assert results[phase]["seconds"] > 0, (path, phase)
        assert results["sequential"]["latency_ms"]["n"] == document["meta"]["sizes"]["sequential"]
        assert results["c32"]["rps"] > 0 and results["c128"]["rps"] > 0
        assert results["streaming"]["ttft_ms"]["n"] > 0 and results["streaming"]["gap_ms"]["n"] > 0

    for path in ("A", "B"):
        assert all(document["paths"][path][phase]["errors"] == 0 for phase in PHASES), path
        responses = document["paths"][path]["streaming_responses"]
        assert responses["served"] is True and responses["errors"] == 0, (path, responses)
        assert responses["ttft_ms"]["n"] == document["meta"]["sizes"]["streams"]
        assert responses["gap_ms"]["n"] > 0
    assert document["added"]["B"]["responses_ttft_p50_ms"] is not None
    held = document["paths"]["B"]["hold"]
    assert held["errors"] == 0
    assert held["max_open_at_once"] == held["streams"] == document["meta"]["sizes"]["hold_streams"]
    assert held["rss_mb_peak"]["hub"] > 0 and held["rss_mb_peak"]["agent"] > 0
    assert set(document["paths"]["B"]["sequential"]["cpu_ms_per_request"]) == {"hub", "agent"}
    assert "ledger" in document["paths"]["B"]
    assert document["added"]["B"]["latency_p50_ms"] is not None
    assert {target["name"] for target in document["targets"]} and all(
        target["ok"] in (True, False, None) for target in document["targets"]
    )
