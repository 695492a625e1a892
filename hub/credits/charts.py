"""The date range a report covers (7, 30 or 90 days, or from/to as typed into a GET form) and the numbers of a
stacked bar chart per day (`templates/_chart.html` draws them, with the same numbers in a table).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from hub.db import utcnow
from hub.errors import BadRequest
from hub.parsing import format_credits

PRESETS = (7, 30, 90)
DEFAULT_DAYS = 30
LONGEST = 366
SERIES = 6  # bars stack at most this many named series; the rest is "other"
OTHER = "other"
# The drawing's coordinates (a viewBox: the SVG scales to its card's width).
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 230, 64, 8, 12, 34
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
BASE = TOP + PLOT_H


@dataclass(frozen=True)
class Bar:
    """One series' part of one day's bar, placed: the template only writes it out."""

    day: str
    series: int
    name: str
    x: str
    y: str
    width: str
    height: str
    title: str


@dataclass(frozen=True)
class Span:
    """Whole UTC days from `first` to `last`, both included."""

    first: date
    last: date
    preset: int | None = None  # 7, 30 or 90 when chosen that way (the form shows it selected)

    @property
    def days(self) -> list[str]:
        count = (self.last - self.first).days + 1
        return [(self.first + timedelta(days=n)).isoformat() for n in range(count)]

    @property
    def start(self) -> datetime:
        return datetime(self.first.year, self.first.month, self.first.day, tzinfo=utcnow().tzinfo)

    @property
    def label(self) -> str:
        if self.preset:
            return f"the last {self.preset} days"
        if self.first == self.last:
            return self.first.isoformat()
        return f"{self.first.isoformat()} to {self.last.isoformat()}"

    @property
    def query(self) -> str:
        """The span as URL parameters, to keep it on links."""
        if self.preset:
            return f"days={self.preset}"
        return f"from={self.first.isoformat()}&to={self.last.isoformat()}"


def _date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(f"The {what} date must be a date like 2026-11-30, not “{text.strip()[:20]}”.") from None


def parse_span(days: str = "", start: str = "", end: str = "", today: date | None = None) -> Span:
    """The span a report form asks for: `from`/`to` dates if given (either may be left out), else the last
    `days` days (7, 30 or 90; 30 by default)."""
    today = today or utcnow().date()
    if start.strip() or end.strip():
        last = _date(end, "to") if end.strip() else today
        first = _date(start, "from") if start.strip() else last - timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise BadRequest("The from date must not be after the to date.")
        if last > today:
            raise BadRequest(f"The to date must not be after today ({today.isoformat()}, UTC).")
        if (last - first).days + 1 > LONGEST:
            raise BadRequest(f"Please choose at most {LONGEST} days.")
        return Span(first, last)
    text = days.strip() or str(DEFAULT_DAYS)
    if text not in {str(n) for n in PRESETS}:
        raise BadRequest(f"Choose {', '.join(map(str, PRESETS))} days, or a from and a to date.")
    count = int(text)
    return Span(today - timedelta(days=count - 1), today, preset=count)


@dataclass
class Chart:
    """Values per day and series (the series stack in each day's bar); `money` values are micro-credits."""

    caption: str
    unit: str
    days: list[str]
    series: list[str] = field(default_factory=list)
    values: dict[str, list[int]] = field(default_factory=dict)  # series -> one value per day
    money: bool = False

    @property
    def totals(self) -> list[int]:
        return [sum(self.values[name][n] for name in self.series) for n in range(len(self.days))]

    @property
    def peak(self) -> int:
        return max(self.totals, default=0)

    def amount(self, value: int) -> str:
        return format_credits(value) if self.money else f"{value:,}"

    @property
    def bars(self) -> list[Bar]:
        peak, step = self.peak, PLOT_W / (len(self.days) or 1)
        width = f"{max(step * 0.8, 0.8):.2f}"
        placed: list[Bar] = []
        for n, day in enumerate(self.days):
            y = float(BASE)
            for s, name in enumerate(self.series):
                value = self.values[name][n]
                if value <= 0:
                    continue
                height = max(0.75, value / peak * PLOT_H)
                y -= height
                title = f"{day} · {name}: {self.amount(value)} {self.unit}"
                placed.append(
                    Bar(day, s, name, f"{LEFT + n * step + step * 0.1:.1f}", f"{y:.1f}", width, f"{height:.2f}", title)
                )
        return placed

    @property
    def y_ticks(self) -> list[tuple[str, str]]:
        """(y, label) of the grid lines: zero, half the tallest bar, the tallest bar."""
        peak = self.peak
        shares = (0, 0.5, 1) if peak else (0,)
        return [(f"{BASE - share * PLOT_H:.1f}", self.amount(round(peak * share))) for share in shares]

    @property
    def x_ticks(self) -> list[tuple[str, str, str]]:
        """(x, day, text-anchor) for the first, middle and last day."""
        count = len(self.days)
        if not count:
            return []
        step, middle = PLOT_W / count, (count - 1) // 2
        ticks = [(f"{LEFT}", self.days[0], "start")]
        if count > 2:
            ticks.append((f"{LEFT + (middle + 0.5) * step:.1f}", self.days[middle], "middle"))
        if count > 1:
            ticks.append((f"{WIDTH - RIGHT}", self.days[-1], "end"))
        return ticks

    @property
    def table(self) -> list[tuple[str, list[str], str]]:
        """The rows of the table beside the chart, formatted."""
        return [(day, [self.amount(v) for v in values], self.amount(total)) for day, values, total in self.rows]

    @property
    def rows(self) -> list[tuple[str, list[int], int]]:
        """(day, the value of each series, total) for the days with anything: the table beside the chart."""
        return [
            (day, [self.values[name][n] for name in self.series], total)
            for n, (day, total) in enumerate(zip(self.days, self.totals, strict=True))
            if total
        ]


def stacked(
    caption: str, unit: str, days: list[str], points: Iterable[tuple[str, str, int]], *, money: bool = False
) -> Chart:
    """A chart from (day, series, value) points: the biggest series by name, the rest summed as "other"."""
    index = {day: n for n, day in enumerate(days)}
    per: defaultdict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    for day, name, value in points:
        if day in index and value:
            per[name][index[day]] += int(value)
    ranked = sorted(per, key=lambda name: (-sum(per[name]), name))
    chart = Chart(caption, unit, days, money=money)
    if len(ranked) > SERIES:
        other = [sum(per[name][n] for name in ranked[SERIES - 1 :]) for n in range(len(days))]
        ranked = ranked[: SERIES - 1]
        per[OTHER] = other
        ranked.append(OTHER)
    chart.series = ranked
    chart.values = {name: per[name] for name in ranked}
    return chart
