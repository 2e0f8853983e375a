"""GRD-Line model package."""
