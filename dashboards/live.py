"""A live terminal view of a running line, read from Prometheus (what ``make demo`` shows).

A few times a second it shows frames/s, the defect rate, rejects, the p95 capture → decision
latency, the consumer lag and the number of model and ingress replicas. Every value is one PromQL
query built by :mod:`dashboards.promql` from the metric names :mod:`inference.metrics` defines, the
same queries the Grafana dashboards use; nothing here names a metric.

On a terminal the view is a ``rich`` table redrawn in place; when stdout is not a TTY (CI, a log
file) it prints one plain line every few seconds instead.

Ray exports replica metrics every ``RAY_metrics_report_interval_ms`` and Prometheus scrapes every
2 s locally, so the numbers trail the line by a few seconds; frames/s uses a window of several
scrapes (:data:`RATE_WINDOW`), the p95 latency the last minute (:data:`LATENCY_WINDOW`).

:func:`rows` (a :class:`LiveSample` → labelled text) is pure, so the view is unit-tested without
Prometheus; :func:`read_sample` takes the query function as an argument for the same reason.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TextIO

from dashboards import promql as pq
from inference import metrics as im

log = logging.getLogger(__name__)

#: Rate window: five 2-s scrapes and Ray exports (the demo sets 2-s exports), short enough to
#: follow a demo stream of ten seconds.
RATE_WINDOW = "10s"
#: The p95 latency is over the last minute (as on the Grafana line dashboard): a short demo
#: stream keeps its p95 on screen after the cameras stop.
LATENCY_WINDOW = "1m"
#: Gauges that Ray may drop between two exports are read at their highest over this window.
GAUGE_WINDOW = "10s"
#: Ray Serve names its deployments after the classes (inference.ingress / model_deployment);
#: the Grafana capacity panels tell them apart the same way.
INGRESS_DEPLOYMENT_RE = ".*Ingress.*"

#: A query: PromQL in, the sum of the answer's series out (None while there is no series).
Query = Callable[[str], "float | None"]


@dataclass(frozen=True)
class LiveSample:
    """The line's metric values at one instant; ``None`` = no series yet (or no answer)."""

    frames_per_s: float | None = None
    inspected: float | None = None
    defective: float | None = None
    rejects: float | None = None
    late: float | None = None
    p95_latency_s: float | None = None
    consumer_lag: float | None = None
    model_replicas: float | None = None
    ingress_replicas: float | None = None


def queries(line: str, app: str) -> dict[str, str]:
    """PromQL per :class:`LiveSample` field for one ``line`` served by the Serve app ``app``.

    Counters are totals since each replica started (a demo serves from a fresh Ray, so: this
    run); ``frames_per_s`` is over :data:`RATE_WINDOW`, the p95 over :data:`LATENCY_WINDOW`.
    """
    sel = pq.selector(line=line)
    return {
        "frames_per_s": pq.rate(im.FRAMES_INSPECTED, sel, by="", window=RATE_WINDOW),
        "inspected": pq.total(im.FRAMES_INSPECTED, sel),
        "defective": pq.total(im.FRAMES_DEFECTIVE, sel),
        "rejects": pq.total(im.ITEMS_REJECTED, sel),
        "late": pq.total(im.FRAMES_LATE, sel),
        "p95_latency_s": pq.quantile(0.95, im.E2E_LATENCY, sel, by="", window=LATENCY_WINDOW),
        "consumer_lag": pq.gauge(im.CONSUMER_LAG),
        "model_replicas": _replicas(app, ingress=False),
        "ingress_replicas": _replicas(app, ingress=True),
    }


def _replicas(app: str, ingress: bool) -> str:
    """Healthy Serve replicas of the app's ingress deployment, or of its other (model) ones.

    Each replica's series is taken at its highest over :data:`GAUGE_WINDOW`: Ray's metrics agent
    drops a gauge that missed two exports, and on a busy 2-core machine with 2-s exports the
    controller's health gauge came and went between reads. A replica that was replaced is still
    counted for that window.
    """
    op = "=~" if ingress else "!~"
    series = (f'{pq.SERVE_REPLICAS_HEALTHY}'
              f'{{application="{app}",deployment{op}"{INGRESS_DEPLOYMENT_RE}"}}')
    return f"sum (max_over_time({series}[{GAUGE_WINDOW}]))"


def read_sample(query: Query, exprs: dict[str, str]) -> LiveSample:
    """One :class:`LiveSample`: each field's expression through ``query`` (NaN reads as None)."""
    values: dict[str, float | None] = {}
    for f in fields(LiveSample):
        value = query(exprs[f.name])
        values[f.name] = None if value is None or math.isnan(value) else value
    return LiveSample(**values)


def _num(value: float | None, fmt: str = ".0f") -> str:
    return "-" if value is None else format(value, fmt)


def rows(sample: LiveSample) -> list[tuple[str, str]]:
    """The view's rows, (label, text), in display order; ``-`` where a value is missing.

    The defect rate is over the frames inspected so far (steadier than a windowed ratio, and
    defined after the cameras stop); rejects are items, late frames missed their deadline. Ray
    exports a counter only once it was incremented, so once frames flow a counter without a
    series reads 0.
    """
    flowing = sample.inspected is not None

    def count(value: float | None) -> str:
        return _num(0.0 if value is None and flowing else value)

    if sample.inspected:
        share = (sample.defective or 0.0) / sample.inspected
        defect = f"{100 * share:.1f} % ({_num(sample.defective or 0.0)} of {_num(sample.inspected)})"
    else:
        defect = "-"
    p95 = "-" if sample.p95_latency_s is None else f"{1000 * sample.p95_latency_s:.0f} ms"
    return [
        ("frames/s", _num(sample.frames_per_s, ".1f")),
        ("frames inspected", _num(sample.inspected)),
        ("defect rate", defect),
        ("rejects", count(sample.rejects)),
        ("late frames", count(sample.late)),
        ("p95 capture->decision, 1 min", p95),
        ("consumer lag", _num(sample.consumer_lag)),
        ("replicas model / ingress",
         f"{_num(sample.model_replicas)} / {_num(sample.ingress_replicas)}"),
    ]


def plain_line(sample: LiveSample, elapsed_s: float) -> str:
    """The rows as one log line (what the view prints when stdout is not a terminal)."""
    body = "  ".join(f"{label}={text}" for label, text in rows(sample))
    return f"[live {elapsed_s:5.0f}s] {body}"


def prometheus_query(url: str, timeout_s: float = 2.0) -> Query:
    """A :data:`Query` against the Prometheus at ``url`` (instant queries, now)."""
    from dashboards.report.collect import Prometheus

    client = Prometheus(url, timeout_s=timeout_s)
    return lambda expr: client.instant(expr, datetime.now(UTC))


class LiveView:
    """Shows the line's numbers until :meth:`stop`: a redrawn table on a terminal, else a plain
    line every ``plain_every_s``. Runs on its own thread; the table is redrawn four times a second
    and Prometheus read every ``interval_s`` (its data moves every 2-s scrape anyway, and the
    machine is small)."""

    def __init__(self, query: Query, exprs: dict[str, str], title: str, *,
                 interval_s: float = 1.0, plain_every_s: float = 5.0,
                 out: TextIO | None = None) -> None:
        self._query, self._exprs, self._title = query, exprs, title
        self._interval, self._plain_every = interval_s, plain_every_s
        self._out = out or sys.stdout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self.last: LiveSample = LiveSample()
        self.error: str | None = None

    def start(self) -> LiveView:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="grdline-live", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _sample(self) -> LiveSample:
        from dashboards.report.collect import ReportError

        try:
            self.last, self.error = read_sample(self._query, self._exprs), None
        except ReportError as exc:  # Prometheus busy or restarting: keep the last values
            self.error = str(exc)
        return self.last

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _run(self) -> None:
        if self._out.isatty():
            self._run_rich()
        else:
            self._run_plain()

    def _run_plain(self) -> None:
        while not self._stop.wait(self._plain_every):
            print(plain_line(self._sample(), self._elapsed()), file=self._out, flush=True)
        print(plain_line(self._sample(), self._elapsed()), file=self._out, flush=True)

    def _table(self, sample: LiveSample):
        from rich.table import Table

        note = f"  [red]{self.error}[/red]" if self.error else ""
        table = Table(title=f"{self._title}  [dim]{self._elapsed():.0f} s[/dim]{note}",
                      show_header=False, title_justify="left", min_width=52)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for label, text in rows(sample):
            table.add_row(label, text)
        return table

    def _run_rich(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self._out)
        with Live(self._table(self.last), console=console, refresh_per_second=4,
                  transient=False) as live:
            sampled = -math.inf
            while not self._stop.is_set():
                if time.monotonic() - sampled >= self._interval:
                    sampled = time.monotonic()
                    self._sample()
                live.update(self._table(self.last))
                self._stop.wait(0.25)
            live.update(self._table(self._sample()))
