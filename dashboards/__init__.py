"""GRD-Line dashboards package."""
