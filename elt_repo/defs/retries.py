"""Retry policies from `retries`/`retry_delay` or `retry_policy`."""

from __future__ import annotations

from dagster import Backoff, Jitter, RetryPolicy

from elt_repo.schemas import RetrySpec


def retry_policy(spec: RetrySpec | None) -> RetryPolicy | None:
    """Exponential backoff with plus-minus jitter unless the pipeline says otherwise."""
    if spec is None or spec.max_retries == 0:
        return None
    return RetryPolicy(
        max_retries=spec.max_retries,
        delay=spec.delay,
        backoff=Backoff[spec.backoff],
        jitter=Jitter[spec.jitter] if spec.jitter else None,
    )
