"""GRD-Line inference package."""
