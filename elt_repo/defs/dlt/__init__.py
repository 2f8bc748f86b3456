"""dlt pipelines as Dagster assets: per-resource multi-assets and reference-style `run()` assets."""
