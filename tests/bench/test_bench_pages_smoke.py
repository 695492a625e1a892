"""`python -m bench pages --smoke`: the pages benchmark with 2,000 rows, so it cannot rot between full runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import fresh_postgres

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("/dashboard", "/models", "/keys", "/usage", "/credits", "/earnings", "/gpus", "/admin/usage", "/admin/ledger")


def test_the_pages_smoke_run_times_every_signed_in_page_on_sqlite_and_postgresql(tmp_path: Path) -> None:
    with fresh_postgres("gpuclub_bench_probe"):  # skips (or fails in CI) without PostgreSQL, like the other tests
        pass  # the benchmark makes its own database on the same server (127.0.0.1:5432)
    out = tmp_path / "pages.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "pages", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    assert "pages with 2,000 usage rows" in done.stdout and "under 300 ms" in done.stdout
    document = json.loads(out.read_text())
    for database in ("sqlite", "postgres"):
        result = document["results"][database]
        assert result["rolled_up"] is True
        times = result["pages_ms"]
        assert set(PAGES) <= set(times), database
        assert all(isinstance(ms, float) for path, ms in times.items() if path != "/admin"), (database, times)
        assert any(path.startswith("/credits?before=") for path in times), "the next page of the history is timed"
