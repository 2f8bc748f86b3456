"""elt_repo: a Dagster code location built from a Git repository of dlt and Sling pipelines."""

__version__ = "0.1.0"
