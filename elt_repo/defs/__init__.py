"""Layer 6: the Dagster side, built from a manifest: assets, automation, sensors, resources."""
