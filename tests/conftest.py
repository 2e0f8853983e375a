"""Settings for every test: quiet, reproducible, sized for a 2-core machine."""

from __future__ import annotations

import os

# Ray: no usage reporting, no dashboard; set before anything imports ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
