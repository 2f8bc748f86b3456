"""Step failures that say what failed: pipeline, partition, attempt, the tools' last log lines,
and the cause, all redacted."""

from __future__ import annotations

import logging
import re
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue

from elt_repo.defs.assets import run_commit
from elt_repo.discovery.dlt_inspect import missing_module_hint
from elt_repo.redact import plain, redact
from elt_repo.schemas import PipelineSpec

# Loggers of the tools whose last lines a failure carries (Sling's own output comes in its error).
TOOL_LOGGERS = ("dlt", "dagster_sling", "sling")
LOG_TAIL_LINES = 50
TRACEBACK_CHARS = 8000
# Sling's fatal block: a generic first line, then per stream a "--- <stream> ---" header.
_SLING_DECOR = re.compile(r"^(-{3,}.*-{3,}|~ failure running replication\b.*)$")


class LogTail(logging.Handler):
    """Keeps the last lines the tools logged while a step ran."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)

    def emit(self, record: logging.LogRecord) -> None:
        # A log line that cannot be formatted is not worth failing over.
        with suppress(Exception):
            self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    @contextmanager
    def attached(self) -> Iterator[LogTail]:
        loggers = [logging.getLogger(name) for name in TOOL_LOGGERS]
        for logger in loggers:
            logger.addHandler(self)
        try:
            yield self
        finally:
            for logger in loggers:
                logger.removeHandler(self)


def step_failure(
    context: AssetExecutionContext,
    pipeline: PipelineSpec,
    exc: Exception,
    log_lines: Iterable[str] = (),
) -> Failure:
    """A Failure that says which pipeline, partition and attempt failed, how, and the tool's
    last log lines; everything redacted."""
    attempt = context.retry_number + 1
    attempts = (pipeline.retry.max_retries if pipeline.retry else 0) + 1
    raw = str(exc.description if isinstance(exc, Failure) else exc)
    message = redact(plain(raw).strip() or repr(exc))
    partition = ""
    if context.has_partition_key_range:
        keys = context.partition_key_range
        partition = keys.start if keys.start == keys.end else f"{keys.start}...{keys.end}"
    where = f" partition {partition}" if partition else ""
    tail = [*log_lines, *message.splitlines()][-LOG_TAIL_LINES:]
    metadata: dict[str, Any] = dict(exc.metadata) if isinstance(exc, Failure) else {}
    metadata.update(
        {
            "elt/pipeline": pipeline.name,
            "elt/error_type": type(exc).__name__,
            "elt/error": MetadataValue.text(message[:4000]),
            "elt/attempt": attempt,
            "elt/max_attempts": attempts,
            "elt/partition": partition,
            "elt/log_tail": MetadataValue.md("```\n" + redact(plain("\n".join(tail))) + "\n```"),
            "elt/traceback": MetadataValue.text(
                redact(plain("".join(traceback.format_exception(exc))))[-TRACEBACK_CHARS:]
            ),
        }
    )
    tables = sorted({j["table"] for j in getattr(metadata.get("failed_jobs"), "value", None) or []})
    if tables:
        metadata["elt/failed_tables"] = ", ".join(tables)
    hint = missing_module_hint(exc)
    if hint:
        metadata["elt/hint"] = hint
    return Failure(
        description=f"{pipeline.name}{where} failed on attempt {attempt} of {attempts}: "
        f"{type(exc).__name__}: {_summary(message) or type(exc).__name__}"
        + (f"; {hint}" if hint else ""),
        metadata=metadata,
        allow_retries=exc.allow_retries if isinstance(exc, Failure) else True,
    )


def _sling_cause(lines: list[str]) -> str | None:
    """What Sling says after `fatal:`, without its banner, separators and stream headers:
    e.g. "Failed to execute SQL: IO Error: Could not set lock on file ...". None if no fatal."""
    if "fatal:" not in lines:
        return None
    cause = [
        line.removeprefix("~ ")
        for line in lines[lines.index("fatal:") + 1 :]
        if not _SLING_DECOR.match(line)
    ]
    return ": ".join(cause[:2]) if cause else None


def _summary(message: str) -> str:
    """The cause in one line. Sling's is what follows its `fatal:`; otherwise the message's
    first line, and its last when there are more: tools often wrap the cause, as dlt's
    "... failed at `step=sync` with exception:" does, and the cause comes last."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    sling = _sling_cause(lines)
    if sling:
        return sling[:600]
    if len(lines) > 1:
        return f"{lines[0][:300]} … {lines[-1][:300]}"
    return lines[0][:500] if lines else ""


def with_failure_details(
    context: AssetExecutionContext, pipeline: PipelineSpec, body: Iterator[MaterializeResult]
) -> Iterator[MaterializeResult]:
    """Run an asset body; any exception becomes a retryable Failure with the details."""
    with LogTail().attached() as tail:
        try:
            yield from body
        except Exception as exc:
            failure = step_failure(context, pipeline, exc, list(tail.lines))
            context.log.error(f"{failure.description} (commit {run_commit(context) or '?'})")
            # `from None`: the original exception, with its unredacted message, would be
            # stored in the event log; its redacted traceback goes into the metadata instead.
            raise failure from None
