"""GRD-Line ingest package."""
