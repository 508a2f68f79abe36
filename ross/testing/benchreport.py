"""
The pure half of ``./dev bench`` (bench/all.py): rows of samples, their
medians and ratios against docker, targets and whether they are met, and
the three ways a run is shown: a text table, JSON, and a self-contained
HTML page (inline SVG, no scripts or fetched assets); and the comparison
of two runs' JSON.

Every figure is the median of a row's samples; the ratio is always Ross's
median over docker's, in the row's unit, so "<= 0.45" reads "at most 0.45x
docker's time" for a latency and ">= 5" "at least 5x docker's MB/s" for a
throughput. A target can instead bound Ross's own median (70 ms, 120 MiB).
"""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

Op = Literal["<=", ">="]


@dataclass(frozen=True)
class Target:
    """
    A bound on a row: on the ratio to docker (C{of="ratio"}) or on Ross's
    own median (C{of="ross"}, in the row's unit); C{source} names where it
    comes from ("issue 16").
    """

    op: Op
    value: float
    of: Literal["ratio", "ross"] = "ratio"
    source: str = ""

    def holds(self, figure: float) -> bool:
        return figure <= self.value if self.op == "<=" else figure >= self.value

    def describe(self, unit: str) -> str:
        if self.of == "ratio":
            return f"{self.op} {self.value:g}x"
        return f"{self.op} {self.value:g} {unit}"


@dataclass
class Row:
    """
    One comparison: what is measured (C{method}, one line: what is timed,
    how many runs, which statistic), in C{unit}, Ross's and docker's
    samples. C{skipped} says why a row could not run (then it has no
    samples); C{docker_missing} why docker's side is absent.
    """

    name: str
    method: str
    unit: str
    target: Target | None = None
    ross: list[float] = field(default_factory=list)
    docker: list[float] = field(default_factory=list)
    skipped: str = ""
    docker_missing: str = ""
    group: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        data = dict(data)
        target = data.pop("target", None)
        return cls(target=Target(**target) if target else None, **data)


def median(samples: Sequence[float]) -> float | None:
    return statistics.median(samples) if samples else None


def percentile(samples: Sequence[float], p: float) -> float | None:
    """
    The C{p} quantile (0..1) by nearest rank, as the bench scripts report
    p90: a sample that was seen, not an interpolation.
    """
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def ratio(row: Row) -> float | None:
    """
    Ross's median over docker's, or None without both (or a docker median
    of zero, which no real measurement gives).
    """
    r, d = median(row.ross), median(row.docker)
    if r is None or d is None or d == 0:
        return None
    return r / d


def verdict(row: Row) -> str:
    """
    "met", "NOT met", or why there is no verdict: a skipped row, no target,
    or a ratio target without docker's figure.
    """
    if row.skipped:
        return "not run"
    if row.target is None:
        return "-"
    figure = ratio(row) if row.target.of == "ratio" else median(row.ross)
    if figure is None:
        return "no docker" if row.target.of == "ratio" else "no figure"
    return "met" if row.target.holds(figure) else "NOT met"


def number(value: float | None) -> str:
    """A figure to three significant digits or so, without exponent noise."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cells(row: Row) -> list[str]:
    """The table's cells of C{row}: row, Ross, docker, ratio, target, met."""
    unit = f" {row.unit}" if row.unit else ""
    target = row.target.describe(row.unit) if row.target else "-"
    if row.skipped:
        return [row.name, "-", "-", "-", target, f"not run: {row.skipped}"]
    r, d = median(row.ross), median(row.docker)
    docker = number(d) + unit if d is not None else f"- ({row.docker_missing})" if row.docker_missing else "-"
    rat = ratio(row)
    return [row.name, number(r) + unit if r is not None else "-", docker,
            f"{rat:.2f}x" if rat is not None else "-", target, verdict(row)]


HEADER = ["row", "Ross", "docker", "ratio", "target", "met"]


def render_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """
    The rows as a text table (aligned columns), or as a Markdown table for
    the README.
    """
    body = [cells(row) for row in rows]
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(line[i]) for line in [HEADER, *body]) for i in range(len(HEADER))]
    out = []
    for line in [HEADER, *body]:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if line is HEADER:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def render_methods(rows: Sequence[Row]) -> str:
    """One line per row: its name and how it is measured."""
    width = max((len(row.name) for row in rows), default=0)
    return "".join(f"{row.name.ljust(width)}  {row.method}\n" for row in rows)


# ----------------------------------------------------------------- JSON

FORMAT = "ross-bench/1"


def to_json(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """
    A run as JSON: C{meta} (machine, versions, date, options, checks) and
    every row with its samples.
    """
    return json.dumps({"format": FORMAT, **meta, "rows": [row.to_dict() for row in rows]}, indent=1) + "\n"


def from_json(text: str) -> tuple[list[Row], dict[str, Any]]:
    """The rows and the rest of a run written by L{to_json}."""
    data = json.loads(text)
    if data.get("format") != FORMAT:
        raise ValueError(f"not a ross bench report (format {data.get('format')!r}, expected {FORMAT!r})")
    rows = [Row.from_dict(r) for r in data.pop("rows")]
    return rows, data


# -------------------------------------------------------------- compare

def render_compare(a: Sequence[Row], b: Sequence[Row], names: tuple[str, str] = ("A", "B")) -> str:
    """
    Two runs side by side, row by row (in A's order, then rows only B
    has): each run's Ross median, ratio and verdict, and how Ross's median
    moved from A to B (negative is less: faster for a time, slower for a
    rate).
    """
    by_name = {row.name: row for row in b}
    order = [row.name for row in a] + [row.name for row in b if row.name not in {r.name for r in a}]
    first = {row.name: row for row in a}
    header = ["row", f"Ross {names[0]}", f"ratio {names[0]}", f"met {names[0]}",
              f"Ross {names[1]}", f"ratio {names[1]}", f"met {names[1]}", "Ross B/A"]
    body = []
    for name in order:
        line = [name]
        for row in (first.get(name), by_name.get(name)):
            if row is None:
                line += ["(absent)", "", ""]
                continue
            r, rat = median(row.ross), ratio(row)
            unit = f" {row.unit}" if row.unit else ""
            line += [number(r) + unit if r is not None else "-", f"{rat:.2f}x" if rat is not None else "-",
                     verdict(row)]
        ra = median(first[name].ross) if name in first else None
        rb = median(by_name[name].ross) if name in by_name else None
        line.append(f"{(rb / ra - 1) * 100:+.0f}%" if ra and rb is not None else "-")
        body.append(line)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in body]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------- HTML

MET, MISSED, NEUTRAL = "#2e7d32", "#c62828", "#607d8b"
ROSS_COLOUR, DOCKER_COLOUR = "#1565c0", "#ef6c00"


def _colour(row: Row) -> str:
    return {"met": MET, "NOT met": MISSED}.get(verdict(row), NEUTRAL)


def bars_svg(bars: Sequence[tuple[str, float | None, str]], marks: Sequence[tuple[float, str, bool]],
             unit: str) -> str:
    """
    Horizontal bars (label, value, colour) on a scale from 0 that also
    shows C{marks} (value, label, solid: the target is solid, 1x docker
    dotted); a mark's label sits above the bars, the other below, so the
    two never overlap.
    """
    known = [v for _, v, _ in bars if v is not None]
    if not known:
        return ""
    top = max(known + [value for value, _, _ in marks]) * 1.15 or 1.0
    width, left, bar = 460, 90, 18
    height = 18 + len(bars) * (bar + 8) + 16

    def x(value: float) -> float:
        return left + (width - left - 60) * value / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    y = 16
    for label, value, colour in bars:
        parts.append(f'<text x="{left - 6}" y="{y + bar - 5}" text-anchor="end" font-size="11">'
                     f'{html.escape(label)}</text>')
        if value is not None:
            text = f"{value:.2f}x" if unit == "x" else f"{number(value)} {html.escape(unit)}"
            parts.append(f'<rect x="{left}" y="{y}" width="{max(x(value) - left, 1):.1f}" height="{bar}" '
                         f'fill="{colour}"><title>{text}</title></rect>')
            parts.append(f'<text x="{x(value) + 4:.1f}" y="{y + bar - 5}" font-size="11">{text}</text>')
        y += bar + 8
    for value, label, solid in marks:
        style = 'stroke="#000" stroke-width="2"' if solid else 'stroke="#999" stroke-dasharray="2,2"'
        parts.append(f'<line x1="{x(value):.1f}" y1="14" x2="{x(value):.1f}" y2="{y}" {style}/>')
        parts.append(f'<text x="{x(value):.1f}" y="{10 if solid else y + 10}" font-size="10" '
                     f'text-anchor="middle">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def ratio_svg(runs: Sequence[tuple[str, Row]]) -> str:
    """
    The chart of a row's target, one bar per run (one run, or two when
    comparing): the ratio to docker against the target's line and 1x; for a
    target on Ross's own figure, Ross's and docker's medians against it.
    """
    target = next((row.target for _, row in runs if row.target), None)
    if target is not None and target.of == "ross":
        bars = []
        for label, row in runs:
            bars.append((f"Ross {label}".strip(), median(row.ross), _colour(row)))
            bars.append((f"docker {label}".strip(), median(row.docker), DOCKER_COLOUR))
        unit = runs[0][1].unit
        return bars_svg(bars, [(target.value, f"target {target.op} {target.value:g} {unit}", True)], unit)
    marks = [(1.0, "1x docker", False)]
    if target is not None:
        marks.append((target.value, f"target {target.op} {target.value:g}x", True))
    return bars_svg([(label or "Ross/docker", ratio(row), _colour(row)) for label, row in runs], marks, "x")


def distribution_svg(runs: Sequence[tuple[str, Row]]) -> str:
    """
    Every sample of Ross and docker as a dot on one axis per engine and
    run, median and p90 marked: how a latency is spread, not only where its
    middle is. Only for rows with several samples a side.
    """
    series = []
    for label, row in runs:
        for engine, samples, colour in (("Ross", row.ross, ROSS_COLOUR), ("docker", row.docker, DOCKER_COLOUR)):
            if len(samples) >= 3:
                series.append((f"{engine} {label}".strip(), samples, colour, row.unit))
    if not series:
        return ""
    low = min(min(s) for _, s, _, _ in series)
    high = max(max(s) for _, s, _, _ in series)
    span = (high - low) or (abs(high) or 1.0)
    width, left, lane = 420, 90, 22
    height = len(series) * lane + 30

    def x(value: float) -> float:
        return left + (width - left - 14) * (value - low) / span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i, (label, samples, colour, unit) in enumerate(series):
        y = 12 + i * lane
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" font-size="11">{html.escape(label)}</text>')
        parts.append(f'<line x1="{left}" y1="{y}" x2="{width - 14}" y2="{y}" stroke="#eee"/>')
        for value in samples:
            parts.append(f'<circle cx="{x(value):.1f}" cy="{y}" r="2.5" fill="{colour}" fill-opacity="0.55"/>')
        m, p90 = median(samples), percentile(samples, 0.9)
        assert m is not None and p90 is not None
        parts.append(f'<line x1="{x(m):.1f}" y1="{y - 8}" x2="{x(m):.1f}" y2="{y + 8}" stroke="#000" '
                     f'stroke-width="2"><title>median {number(m)} {html.escape(unit)}</title></line>')
        parts.append(f'<line x1="{x(p90):.1f}" y1="{y - 5}" x2="{x(p90):.1f}" y2="{y + 5}" stroke="#000" '
                     f'stroke-dasharray="2,1"><title>p90 {number(p90)} {html.escape(unit)}</title></line>')
    axis = 12 + len(series) * lane
    unit = html.escape(series[0][3])
    parts.append(f'<text x="{left}" y="{axis}" font-size="10">{number(low)} {unit}</text>')
    parts.append(f'<text x="{width - 14}" y="{axis}" font-size="10" text-anchor="end">{number(high)} {unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; white-space: nowrap; }
td:first-child, td:last-child { white-space: normal; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.met { color: #2e7d32; font-weight: 600; } .missed { color: #c62828; font-weight: 600; }
.row { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; margin: 12px 0; }
.row h3 { margin: 0 0 4px 0; font-size: 15px; } .method { color: #555; margin: 0 0 6px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; } dl { display: grid; grid-template-columns: max-content auto; }
dt { font-weight: 600; padding-right: 1em; } dd { margin: 0; }
"""


def _verdict_class(text: str) -> str:
    return "met" if text == "met" else "missed" if text == "NOT met" else ""


def _meta_html(meta: dict[str, Any]) -> str:
    items = []
    for key in ("file", "date", "machine", "versions", "options", "notes", "checks"):
        if key not in meta:
            continue
        value = meta[key]
        if isinstance(value, dict):
            text = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            text = "; ".join(str(v) for v in value)
        else:
            text = str(value)
        items.append(f"<dt>{html.escape(key)}</dt><dd>{html.escape(text)}</dd>")
    return "<dl>" + "".join(items) + "</dl>"


def render_html(runs: Sequence[tuple[str, Sequence[Row], dict[str, Any]]]) -> str:
    """
    A page for one run (C{runs} of one) or two side by side: the summary
    table of each, then a section per row with its method, its ratio bars
    against the target line and, for rows with samples, their
    distribution.
    """
    title = "Ross vs docker" + (f": {' vs '.join(label for label, _, _ in runs)}" if len(runs) > 1 else "")
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for label, rows, meta in runs:
        if len(runs) > 1:
            out.append(f"<h2>{html.escape(label)}</h2>")
        out.append(_meta_html(meta))
        out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in HEADER) + "</tr>")
        for row in rows:
            c = cells(row)
            out.append("<tr>" + f"<td>{html.escape(c[0])}</td>"
                       + "".join(f"<td class='num'>{html.escape(v)}</td>" for v in c[1:4])
                       + f"<td>{html.escape(c[4])}</td><td class='{_verdict_class(verdict(row))}'>"
                       + f"{html.escape(c[5])}</td></tr>")
        out.append("</table>")
    out.append("<h2>Rows</h2>")
    order: list[str] = []
    for _, rows, _ in runs:
        order += [row.name for row in rows if row.name not in order]
    for name in order:
        present = [(label if len(runs) > 1 else "", row) for label, rows, _ in runs for row in rows
                   if row.name == name]
        row = present[0][1]
        verdicts = ", ".join(f"{label + ': ' if label else ''}{verdict(r)}" for label, r in present)
        out.append(f"<div class='row'><h3>{html.escape(name)} <small>({html.escape(verdicts)})</small></h3>"
                   f"<p class='method'>{html.escape(row.method)}</p>")
        skipped = [f"{label + ': ' if label else ''}not run: {r.skipped}" for label, r in present if r.skipped]
        if skipped:
            out.append("<p>" + html.escape("; ".join(skipped)) + "</p>")
        charts = [ratio_svg(present), distribution_svg(present)]
        out.append("<div class='charts'>" + "".join(c for c in charts if c) + "</div></div>")
    out.append("</body></html>\n")
    return "".join(out)
