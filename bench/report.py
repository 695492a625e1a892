"""Turning the generator's numbers into the table on stdout, the targets and the JSON document."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

NAMES = {"A": "A upstream direct", "B": "B hub + agent", "C": "C LiteLLM proxy"}
RSS_LIMIT_MB = 300.0
Paths = dict[str, dict[str, Any]]


@dataclass
class Target:
    name: str
    measured: str
    ok: bool | None  # None: not measured in this run (e.g. LiteLLM skipped)


def _get(paths: Paths, path: str, *keys: str) -> Any:
    value: Any = paths.get(path)
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def added(paths: Paths) -> dict[str, dict[str, float | None]]:
    """What each proxy adds over going straight to the upstream (same run, same percentile)."""
    out: dict[str, dict[str, float | None]] = {}
    for path in paths:
        if path == "A":
            continue
        row: dict[str, float | None] = {}
        for label, keys in {
            "latency_p50_ms": ("sequential", "latency_ms", "p50"),
            "latency_p99_ms": ("sequential", "latency_ms", "p99"),
            "ttft_p50_ms": ("streaming", "ttft_ms", "p50"),
            "ttft_p99_ms": ("streaming", "ttft_ms", "p99"),
            "responses_ttft_p50_ms": ("streaming_responses", "ttft_ms", "p50"),
            "responses_ttft_p99_ms": ("streaming_responses", "ttft_ms", "p99"),
        }.items():
            mine, direct = _get(paths, path, *keys), _get(paths, "A", *keys)
            row[label] = round(mine - direct, 3) if mine is not None and direct is not None else None
        out[path] = row
    return out


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


def targets(paths: Paths, hold_streams: int) -> list[Target]:
    extra = added(paths)
    b, c = extra.get("B", {}), extra.get("C", {})
    found: list[Target] = []
    quarters = [
        ("hub+agent added latency p50 <= 1/4 of LiteLLM's", b.get("latency_p50_ms"), c.get("latency_p50_ms")),
        ("hub+agent added time to first token p50 <= 1/4 of LiteLLM's", b.get("ttft_p50_ms"), c.get("ttft_p50_ms")),
    ]
    if c.get("responses_ttft_p50_ms") is not None:  # only where LiteLLM served /v1/responses in this run
        name = "hub+agent added time to first token p50 on /v1/responses <= 1/4 of LiteLLM's"
        quarters.append((name, b.get("responses_ttft_p50_ms"), c.get("responses_ttft_p50_ms")))
    for name, ours, theirs in quarters:
        ratio = _ratio(ours, theirs)
        measured = f"{ours:.2f} ms vs {theirs:.2f} ms = {ratio:.2f}" if ratio is not None else "not measured"
        found.append(Target(name, measured, None if ratio is None else ratio <= 0.25))
    ours_rps, theirs_rps = _get(paths, "B", "c32", "rps"), _get(paths, "C", "c32", "rps")
    ratio = _ratio(ours_rps, theirs_rps)
    measured = f"{ours_rps:.0f} vs {theirs_rps:.0f} req/s = {ratio:.1f}x" if ratio is not None else "not measured"
    found.append(
        Target("throughput at concurrency 32 >= 4x LiteLLM's", measured, None if ratio is None else ratio >= 4)
    )
    held = _get(paths, "B", "hold")
    if isinstance(held, dict):
        peak = held["rss_mb_peak"].get("hub", 0.0)
        ok = held["max_open_at_once"] == hold_streams and held["errors"] == 0 and peak < RSS_LIMIT_MB
        measured = f"{held['max_open_at_once']} open at once, {held['errors']} errors, hub peak RSS {peak:.0f} MB"
        found.append(Target(f"{hold_streams} streams held, hub RSS < {RSS_LIMIT_MB:.0f} MB, no errors", measured, ok))
    return found


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cpu(paths: Paths, path: str, phase: str) -> str:
    """CPU time the proxy's processes spent per request: the sum, then each process."""
    spent = _get(paths, path, phase, "cpu_ms_per_request")
    if not spent:
        return "-"
    total = f"{sum(spent.values()):.2f}"
    return total if len(spent) == 1 else f"{total} ({', '.join(f'{k} {v:.2f}' for k, v in spent.items())})"


def _failures(phase: Any) -> str:
    """The error count, and why: e.g. `76 (HTTP 503: 70, TimeoutError: 6)`."""
    if not isinstance(phase, dict):
        return "-"
    reasons = phase.get("failures") or {}
    detail = ", ".join(f"{reason}: {count}" for reason, count in reasons.items())
    return f"{phase['errors']} ({detail})" if detail else str(phase["errors"])


STREAMED = {"streaming": "/v1/chat/completions", "streaming_responses": "/v1/responses"}
STREAM_HEADER = ["path", "ttft p50", "ttft p99", "added ttft p50", "gap p50", "gap p99", "errors"]


def _stream_row(paths: Paths, extra: dict[str, Any], path: str, phase: str) -> list[str]:
    """One path's streaming numbers; `n/a` where the path does not serve the API (or the phase did not run)."""
    stats = _get(paths, path, phase)
    if not isinstance(stats, dict) or stats.get("served") is False:
        why = f"not served: {_failures(stats)}" if isinstance(stats, dict) else "not run"
        return [NAMES[path], "n/a", "n/a", "n/a", "n/a", "n/a", why]
    added_key = "ttft_p50_ms" if phase == "streaming" else "responses_ttft_p50_ms"
    return [
        NAMES[path],
        *(_ms(_get(stats, "ttft_ms", q)) for q in ("p50", "p99")),
        _ms(extra.get(path, {}).get(added_key)),
        *(_ms(_get(stats, "gap_ms", q)) for q in ("p50", "p99")),
        _failures(stats),
    ]


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
    )


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return ["", title, _row(header, widths), rule, *(_row(r, widths) for r in rows)]


def table(document: dict[str, Any]) -> str:
    paths: Paths = document["paths"]
    extra = document["added"]
    sizes = document["meta"]["sizes"]
    meta = document["meta"]
    lines = [f"gpuclub bench, {meta['date']} on {meta['machine']['cores']} cores ({meta['machine']['cpu']})"]
    seq = [
        [
            NAMES[p],
            *(_ms(_get(paths, p, "sequential", "latency_ms", q)) for q in ("p50", "p95", "p99")),
            _ms(extra.get(p, {}).get("latency_p50_ms")),
            _ms(extra.get(p, {}).get("latency_p99_ms")),
            _failures(_get(paths, p, "sequential")),
            _cpu(paths, p, "sequential"),
        ]
        for p in paths
    ]
    header = ["path", "p50 ms", "p95 ms", "p99 ms", "added p50", "added p99", "errors", "proxy CPU ms/request"]
    lines += _table(f"sequential, not streamed ({sizes['sequential']} requests each)", header, seq)
    for level in sizes["concurrency"]:
        rows = [
            [NAMES[p], f"{_get(paths, p, f'c{level}', 'rps') or 0:.0f}"]
            + [_ms(_get(paths, p, f"c{level}", "latency_ms", q)) for q in ("p50", "p99")]
            + [_failures(_get(paths, p, f"c{level}")), f"{_get(paths, p, f'c{level}', 'gen_cpu')}"]
            + [_cpu(paths, p, f"c{level}")]
            for p in paths
        ]
        header = ["path", "req/s", "p50 ms", "p99 ms", "errors", "load gen cores", "proxy CPU ms/request"]
        lines += _table(f"concurrency {level} for {sizes['duration']:g} s", header, rows)
    for phase, api in STREAMED.items():
        title = (
            f"streaming {api} ({sizes['streams']} streams one after another, {sizes['chunks']} tokens "
            f"{sizes['chunk_gap'] * 1000:g} ms apart at the upstream; ms)"
        )
        lines += _table(title, STREAM_HEADER, [_stream_row(paths, extra, p, phase) for p in paths])
    held = [(p, _get(paths, p, "hold")) for p in paths]
    rows = [
        [NAMES[p], f"{h['max_open_at_once']}/{h['streams']}", f"{h['all_open_after_s']}", _failures(h)]
        + [f"{name} {h['rss_mb_before'][name]:.0f} -> {h['rss_mb_peak'][name]:.0f}" for name in h["rss_mb_peak"]]
        for p, h in held
        if isinstance(h, dict)
    ]
    if rows:
        width = max(len(r) for r in rows)
        rows = [r + [""] * (width - len(r)) for r in rows]
        header = ["path", "open at once", "all open after s", "errors", *(["RSS MB before -> peak"] * (width - 4))]
        lines += _table(f"{sizes['hold_streams']} streams held open against a slow upstream", header, rows)
    lines += ["", "targets (ratios from this run)"]
    for target in document["targets"]:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[target["ok"]]
        lines.append(f"  {verdict}  {target['name']}: {target['measured']}")
    return "\n".join(lines)


def document(meta: dict[str, Any], paths: Paths) -> dict[str, Any]:
    found = targets(paths, meta["sizes"]["hold_streams"])
    return {"meta": meta, "paths": paths, "added": added(paths), "targets": [asdict(t) for t in found]}
