"""The Job queue page: server-rendered HTML with inline SVG charts.

No JavaScript library and nothing fetched from outside the wheel: the stylesheet and a
short theme script are served by the plugin itself (``static/``), so the page works under
a strict Content-Security-Policy (``default-src 'none'``, styles and script from 'self').
Every chart has a title and a description and its numbers in a table beside it.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

from job_manager.airflow_plugin.snapshot import Snapshot

JOB_STATUSES = (
    "pending",
    "processing",
    "awaiting_retry",
    "generation_successful",
    "completed",
    "failed",
)
DOWNLOAD_STATUSES = ("pending", "downloading", "completed", "failed")
SERIES = (("added", "Added"), ("completed", "Completed"), ("failed", "Failed"))


def age(seconds: float | None) -> str:
    """``3 d 4 h``, ``5 h 12 min``, ``42 s``; an em dash for none."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s >= 86400:
        hours = s % 86400 // 3600
        return f"{s // 86400} d {hours} h" if hours else f"{s // 86400} d"
    if s >= 3600:
        minutes = s % 3600 // 60
        return f"{s // 3600} h {minutes} min" if minutes else f"{s // 3600} h"
    if s >= 60:
        return f"{s // 60} min"
    return f"{s} s"


def size(n: int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def num(n: int) -> str:
    return f"{n:,}"


def _nice_max(v: int) -> int:
    if v <= 4:
        return 4
    magnitude = 10 ** (len(str(v)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        top = int(step * magnitude)
        if top >= v and top % 4 == 0:
            return top
    return int(10 * magnitude)


def _label(start: str, unit: str) -> str:
    t = dt.datetime.fromisoformat(start)
    return t.strftime("%H:%M") if unit == "hour" else t.strftime("%b %d")


def chart(buckets: list[dict[str, Any]], unit: str, chart_id: str, title: str) -> str:
    """A grouped bar chart (added, completed, failed per bucket) as inline SVG."""
    width, height = 960, 200
    left, right, top, bottom = 52, 8, 10, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([max(b["added"], b["completed"], b["failed"]) for b in buckets] + [0])
    ymax = _nice_max(peak)
    n = max(len(buckets), 1)
    group = plot_w / n
    bar = max(group * 0.8 / 3, 1.0)
    totals = {key: sum(b[key] for b in buckets) for key, _ in SERIES}
    desc = (
        f"{title}: {num(totals['added'])} added, {num(totals['completed'])} completed, "
        f"{num(totals['failed'])} failed; the busiest {unit} had {num(peak)}."
    )
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(desc)}</desc>',
    ]
    for i in range(5):
        value = ymax * i // 4
        y = top + plot_h - plot_h * i / 4
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{num(value)}'
            "</text>"
        )
    every = 3 if unit == "hour" else 5
    for i, b in enumerate(buckets):
        x0 = left + i * group + group * 0.1
        for j, (key, name) in enumerate(SERIES):
            v = b[key]
            h = plot_h * v / ymax if ymax else 0
            out.append(
                f'<rect class="bar {key}" x="{x0 + j * bar:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}"><title>{escape(_label(b["start"], unit))}'
                f" {name.lower()}: {num(v)}</title></rect>"
            )
        if i % every == 0 or i == len(buckets) - 1:
            out.append(
                f'<text class="axis" x="{left + i * group + group / 2:.1f}" '
                f'y="{height - bottom + 16}" text-anchor="middle">'
                f"{escape(_label(b['start'], unit))}</text>"
            )
    out.append("</svg>")
    legend = "".join(
        f'<span class="key"><span class="swatch {key}"></span>{name} '
        f"<strong>{num(totals[key])}</strong></span>"
        for key, name in SERIES
    )
    rows = "".join(
        f"<tr><th scope='row'>{escape(_label(b['start'], unit))}</th><td>{num(b['added'])}</td>"
        f"<td>{num(b['completed'])}</td><td>{num(b['failed'])}</td></tr>"
        for b in buckets
    )
    table = (
        f'<details><summary>{escape(title)} as a table</summary><table class="numbers">'
        f"<thead><tr><th scope='col'>{'Hour' if unit == 'hour' else 'Day'}</th>"
        "<th scope='col'>Added</th><th scope='col'>Completed</th><th scope='col'>Failed</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></details>"
    )
    return (
        f'<figure id="{chart_id}"><figcaption><h3>{escape(title)}</h3>'
        f'<div class="legend">{legend}</div></figcaption>{"".join(out)}{table}</figure>'
    )


def _card(label: str, value: str, test_id: str, *, alert: bool = False, note: str = "") -> str:
    cls = "card alert" if alert else "card"
    note_html = f'<div class="note">{escape(note)}</div>' if note else ""
    return (
        f'<div class="{cls}"><div class="label">{escape(label)}</div>'
        f'<div class="value" data-testid="{test_id}">{escape(value)}</div>{note_html}</div>'
    )


def page(s: Snapshot, *, base: str, static: str) -> str:
    """The whole page. ``base``: Airflow's UI root (links to DAGs); ``static``: this app's
    static files. Shows no DSN or password: only counts, ages, file names and sizes."""
    statuses = [
        *JOB_STATUSES,
        *sorted({st for v in s.jobs.values() for st in v} - set(JOB_STATUSES)),
    ]
    totals = {st: sum(v.get(st, 0) for v in s.jobs.values()) for st in statuses}
    head = "".join(f"<th scope='col'>{escape(st)}</th>" for st in statuses)
    body = "".join(
        f"<tr data-job-type='{escape(jt)}'><th scope='row'>{escape(jt)}</th>"
        + "".join(
            f"<td data-status='{escape(st)}'>{num(counts.get(st, 0))}</td>" for st in statuses
        )
        + f"<td class='total'>{num(sum(counts.values()))}</td></tr>"
        for jt, counts in sorted(s.jobs.items())
    )
    foot = (
        "<tr><th scope='row'>All types</th>"
        + "".join(f"<td>{num(totals[st])}</td>" for st in statuses)
        + f'<td class="total" data-testid="jobs-total">{num(s.jobs_total)}</td></tr>'
    )
    jobs_table = (
        '<table class="numbers" id="jobs"><caption>Jobs by type and status</caption>'
        f"<thead><tr><th scope='col'>Job type</th>{head}<th scope='col'>Total</th></tr></thead>"
        f"<tbody>{body}</tbody><tfoot>{foot}</tfoot></table>"
        if s.jobs
        else '<p class="empty">No jobs in the queue yet.</p>'
    )
    dl_statuses = [*DOWNLOAD_STATUSES, *sorted(set(s.downloads) - set(DOWNLOAD_STATUSES))]
    downloads = (
        '<table class="numbers" id="downloads"><caption>Download queue by status</caption>'
        "<thead><tr>"
        + "".join(f"<th scope='col'>{escape(st)}</th>" for st in dl_statuses)
        + "</tr></thead><tbody><tr>"
        + "".join(
            f"<td data-status='{escape(st)}'>{num(s.downloads.get(st, 0))}</td>"
            for st in dl_statuses
        )
        + "</tr></tbody></table>"
    )
    backup_rows = "".join(
        f"<tr><td class='mono'>{escape(b['name'])}</td><td>{size(b['size_bytes'])}</td>"
        f"<td>{age(b['age_s'])}</td><td>{num(b['rows'].get('jobs', 0))}</td>"
        f"<td>{num(b['rows'].get('download_queue', 0))}</td>"
        + (
            "<td class='ok'>✓ verifies</td>"
            if b["verified"]
            else f"<td class='bad'>✗ {escape(b['problem'] or 'does not verify')}</td>"
        )
        + "</tr>"
        for b in s.backups
    )
    backups = (
        '<table class="numbers" id="backups">'
        f"<caption>Newest backups ({num(s.backup_count)} in {escape(s.backup_dir)})</caption>"
        "<thead><tr><th scope='col'>File</th><th scope='col'>Size</th><th scope='col'>Age</th>"
        "<th scope='col'>Jobs</th><th scope='col'>Downloads</th><th scope='col'>Verifies</th>"
        f"</tr></thead><tbody>{backup_rows}</tbody></table>"
        if s.backups
        else f'<p class="empty">No backups in {escape(s.backup_dir)} yet.</p>'
    )

    def dag_link(dag_id: str, text: str) -> str:
        return (
            f'<a class="button" target="_top" href="{escape(base)}/dags/{escape(dag_id)}">'
            f"{escape(text)}</a>"
        )

    problems = (
        '<ul class="problems" id="problems">'
        + "".join(
            f"<li><span class='problem'>{escape(p.text)}</span>"
            f"<span class='fix'>Fix: "
            + (dag_link(p.dag_id, p.action) if p.dag_id else escape(p.action))
            + "</span></li>"
            for p in s.problems
        )
        + "</ul>"
        if s.problems
        else '<p class="ok" id="problems">No problems: the health report is clean.</p>'
    )
    pending = totals.get("pending", 0)
    processing = totals.get("processing", 0)
    cards = "".join(
        [
            _card("Jobs", num(s.jobs_total), "card-total"),
            _card("Pending", num(pending), "card-pending"),
            _card("Processing", num(processing), "card-processing"),
            _card(
                "Stuck",
                num(s.stuck),
                "card-stuck",
                alert=s.stuck > 0,
                note=f"processing for more than {age(s.stuck_after_s)}",
            ),
            _card(
                "Oldest pending",
                age(s.oldest_pending_age_s),
                "card-oldest",
                note="waiting the longest",
            ),
            _card(
                "Problems",
                num(len(s.problems)),
                "card-problems",
                alert=bool(s.problems),
            ),
        ]
    )
    generated = s.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Job queue</title>
<link rel="stylesheet" href="{escape(static)}/job-queue.css">
<script src="{escape(static)}/theme.js"></script>
</head>
<body>
<header>
<div>
<h1>Job queue</h1>
<p class="meta">Read {generated} · schema V{s.schema_version or "—"} · read-only;
actions run as DAGs</p>
</div>
<nav class="actions" aria-label="Actions">
{dag_link("job_manager_backup", "Trigger a backup")}
{dag_link("job_manager_maintenance", "Run maintenance")}
</nav>
</header>
<main>
<section class="cards" aria-label="At a glance">{cards}</section>
<section aria-labelledby="h-problems"><h2 id="h-problems">Problems</h2>{problems}</section>
<section aria-labelledby="h-jobs"><h2 id="h-jobs">Jobs</h2>{jobs_table}</section>
<section aria-labelledby="h-throughput"><h2 id="h-throughput">Throughput</h2>
<p class="meta">Added: by creation time. Completed and failed: by the job's last change.
Times in the database's time zone.</p>
{chart(s.hourly, "hour", "chart-hourly", "Last 24 hours, per hour")}
{chart(s.daily, "day", "chart-daily", "Last 30 days, per day")}
</section>
<section aria-labelledby="h-downloads"><h2 id="h-downloads">Downloads</h2>{downloads}</section>
<section aria-labelledby="h-backups"><h2 id="h-backups">Backups</h2>{backups}</section>
</main>
</body>
</html>
"""


def error_page(message: str, *, static: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="color-scheme" content="light dark">
<title>Job queue</title><link rel="stylesheet" href="{escape(static)}/job-queue.css">
<script src="{escape(static)}/theme.js"></script></head>
<body><main><h1>Job queue</h1><p class="bad" role="alert">{escape(message)}</p></main></body>
</html>
"""
