"""PromQL built from the metric names the code defines: one home for the queries that the Grafana
dashboards and the run report share.

Metric names come from :mod:`inference.metrics` (``prometheus_name``: the name as Ray exports it)
and :mod:`ingest.metrics` (``METRIC_NAMES``). Ray Serve's own metrics are not ours, so their
exported names are written down once here (:data:`SERVE_METRICS`); the integration tests check
that each of them reaches Prometheus during a real run, so a Ray upgrade that renames one fails a
test instead of leaving an empty panel.

Every function takes a label selector (``{line=~"$line"}`` in a dashboard, ``{line="L1"}`` in a
report) and a rate window, so a dashboard panel and a report chart are the same query.
"""

from __future__ import annotations

from inference import metrics as im
from ingest import metrics as gm

# --- Ray Serve's own metrics, as Ray exports them (ray 2.x: "ray_" prefix, counters "_total") ----
#: Healthy replicas per deployment (controller).
SERVE_REPLICAS_HEALTHY = "ray_serve_deployment_replica_healthy"
#: Requests a deployment handle holds because no replica has room (router).
SERVE_QUEUED = "ray_serve_deployment_queued_queries"
#: Requests in flight at the replicas, as the router sees them.
SERVE_ONGOING = "ray_serve_num_ongoing_requests_at_replicas"
#: Requests a replica is processing now.
SERVE_PROCESSING = "ray_serve_replica_processing_queries"
#: Requests processed per deployment replica (counter).
SERVE_REQUESTS = "ray_serve_deployment_request_counter_total"
#: Replica processing latency in ms (histogram base name).
SERVE_LATENCY_MS = "ray_serve_deployment_processing_latency_ms"

#: Numeric status of each Serve application (controller; 6 = RUNNING: ``SERVE_APP_RUNNING``).
SERVE_APP_STATUS = "ray_serve_application_status"
#: ``ApplicationStatus.RUNNING.to_numeric()`` of Ray Serve (a unit test checks it against Ray).
SERVE_APP_RUNNING = 6

SERVE_METRICS: tuple[str, ...] = (
    SERVE_APP_STATUS, SERVE_REPLICAS_HEALTHY, SERVE_QUEUED, SERVE_ONGOING, SERVE_PROCESSING, SERVE_REQUESTS,
    SERVE_LATENCY_MS + "_bucket",
)

#: Every series name a query in this package may use (what the unit tests check against).
KNOWN_SERIES: frozenset[str] = frozenset(
    {s for n in im.SPEC_BY_NAME for s in im.prometheus_series(n)}
    | set(gm.METRIC_NAMES.values())
    | {v + suffix for v in gm.METRIC_NAMES.values() for suffix in ("_bucket", "_sum", "_count")}
    | set(SERVE_METRICS)
    | {im.STATION_FIRED_SERIES}
)


def name(metric: str) -> str:
    """Series name of an inference metric (counters ``…_total``; histograms' base name)."""
    return im.prometheus_name(metric)


def selector(**labels: str) -> str:
    """``{k="v",…}`` with exact matches; ``selector()`` is the empty string."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def rate(metric: str, sel: str = "", by: str = "line", window: str = "1m") -> str:
    """Per-second rate of an inference counter, summed by ``by`` ("" = one series)."""
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({name(metric)}{sel}[{window}]))"


def rate_or_zero(metric: str, sel: str = "", by: str = "line", window: str = "1m",
                 like: str = im.FRAMES_CONSUMED) -> str:
    """:func:`rate`, or 0 for every series of ``like`` while ``metric`` has no series yet (Ray
    exports a counter only once it was first incremented: no late frame yet = no series, which
    a panel would show as "No data" instead of 0)."""
    return f"({rate(metric, sel, by, window)}) or (0 * {rate(like, sel, by, window)})"


def ingest_rate(key: str, sel: str = "", by: str = "line", window: str = "1m") -> str:
    """Per-second rate of an ingest counter (``ingest.metrics.METRIC_NAMES[key]``)."""
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({gm.METRIC_NAMES[key]}{sel}[{window}]))"


def ingest_rate_or_zero(key: str, sel: str = "", by: str = "line", window: str = "1m",
                        like: str = "frames_published") -> str:
    """:func:`ingest_rate`, or 0 for every series of ``like`` while ``key`` has none (a labelled
    prometheus_client counter appears only once it counted, e.g. the first publish failure)."""
    return f"({ingest_rate(key, sel, by, window)}) or (0 * {ingest_rate(like, sel, by, window)})"


def share(numerator: str, denominator: str, sel: str = "", by: str = "line",
          window: str = "1m") -> str:
    """Rate of one inference counter over another's (e.g. defective / inspected)."""
    return (f"{rate(numerator, sel, by, window)} / "
            f"clamp_min({rate(denominator, sel, by, window)}, 1e-9)")


def quantile(q: float, metric: str, sel: str = "", by: str = "line", window: str = "1m") -> str:
    """``histogram_quantile`` of an inference histogram, per ``by`` ("" = across everything)."""
    keys = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({keys}) (rate({name(metric)}_bucket{sel}[{window}])))"


def frames_per_batch(sel: str = "", window: str = "1m") -> str:
    """Mean model batch size as inspected frames over batches, both exact counts.

    Not ``batch_size_sum / batch_size_count``: Ray (2.60, OpenTelemetry export) reports a
    histogram's ``_sum`` from its bucket midpoints; after 56 batches of one frame and one of two
    it read 29.5. Late frames that reached the model are not in the numerator, so under heavy
    lateness this reads a little low.
    """
    return (f"sum (rate({name(im.FRAMES_INSPECTED)}{sel}[{window}])) / "
            f"clamp_min(sum (rate({name(im.BATCH_SIZE)}_count[{window}])), 1e-9)")


def total(metric: str, sel: str = "", by: str = "") -> str:
    """Current value of an inference counter summed (the count since each replica started)."""
    group = f" by ({by})" if by else ""
    return f"sum{group} ({name(metric)}{sel})"


def increase(metric: str, sel: str = "", by: str = "", window: str = "$__range") -> str:
    """How much an inference counter grew over ``window`` (the dashboard's range by default)."""
    group = f" by ({by})" if by else ""
    expr = f"sum{group} (increase({name(metric)}{sel}[{window}]))"
    return expr if by else f"{expr} or vector(0)"


def gauge(metric: str, sel: str = "", by: str = "", how: str = "sum") -> str:
    """An inference gauge aggregated with ``how`` by ``by``."""
    group = f" by ({by})" if by else ""
    return f"{how}{group} ({name(metric)}{sel})"
