"""Run report: what a line (or a replay) did between two times, as one HTML page with its PNGs.

``collect`` reads Prometheus (range and instant queries built by :mod:`dashboards.promql`), the
results in Redis (the line's stream for the window, the result hashes for the masks), the frames
of the worst defects back from Kafka (by the topic/partition/offset each result records) and,
when given, the simulator's ground truth. ``render`` draws the charts with matplotlib and writes
the page with jinja2. ``grdline report`` wires them (:mod:`dashboards.report.cli`).
"""
