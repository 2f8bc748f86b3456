"""Sling replications as Dagster assets, and the Sling resource they run with."""
