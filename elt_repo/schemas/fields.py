"""Validators shared by the pipeline schemas: names, tags, cron strings, timezones, paths."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from marshmallow import ValidationError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TAG_KEY = re.compile(r"^([A-Za-z0-9_.-]{1,63}/)?[A-Za-z0-9_.-]{1,63}$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")
_OWNER = re.compile(r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")
_CRON_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}


def name(value: str) -> None:
    """A Dagster-safe identifier: letters, digits and underscores, not starting with a digit."""
    if not NAME.match(value):
        raise ValidationError(
            f"{value!r} is not a valid name: use letters, digits and underscores, "
            "starting with a letter or underscore"
        )


def owner(value: str) -> None:
    """An owner is an email address or `team:<name>`."""
    if not _OWNER.match(value):
        raise ValidationError(f"{value!r} is not an owner: use an email address or 'team:<name>'")


def tags(value: dict[str, str]) -> None:
    """Dagster's asset tag rules, checked here so the error names the file."""
    for key, val in value.items():
        if not _TAG_KEY.match(key):
            raise ValidationError(
                f"tag key {key!r} must be at most 63 letters, digits, '_', '-' or '.', "
                "with an optional 'prefix/'"
            )
        if not _TAG_VALUE.match(val):
            raise ValidationError(
                f"tag {key!r} has value {val!r}: values must be at most 63 letters, "
                "digits, '_', '-' or '.'"
            )


def cron(value: str) -> None:
    """Five-field cron or an alias such as @daily, that fires at least once."""
    if value in _CRON_ALIASES:
        return
    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValidationError(f"{value!r} is not a valid 5-field cron string")
    try:
        croniter(value, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValidationError(f"{value!r} never fires (no such date)") from None


def fmt_round_trips(value: str, fmt: str, cron_schedule: str, timezone: str) -> None:
    """Each window start formats to a key that parses back to it, and keys do not repeat."""
    if "%" not in fmt:
        raise ValidationError(f"{fmt!r} has no strftime directives, so every key would be equal")
    base = parse_date(value, fmt).replace(tzinfo=ZoneInfo(timezone))
    ticks = croniter(cron_schedule, base)
    starts = [ticks.get_next(datetime) for _ in range(3)]
    for start in starts:
        key = start.strftime(fmt)
        try:
            back = datetime.strptime(key, fmt)
        except ValueError:
            back = None
        if back != start.replace(tzinfo=None):
            raise ValidationError(
                f"{fmt!r} does not round-trip: the window starting {start:%Y-%m-%d %H:%M} "
                f"becomes key {key!r}, which parses back to {back or 'nothing'}; "
                f"it needs every field down to the schedule's period ({cron_schedule!r})"
            )


# Dagster refuses these in partition keys ("..." separates the ends of a key range).
_BAD_KEY_PARTS = ("...",)


def partition_key(value: str) -> None:
    """A static partition key Dagster accepts: no '...', no control characters, no edge spaces."""
    if not value or not value.strip():
        raise ValidationError("partition keys must not be empty")
    if value != value.strip():
        raise ValidationError(f"{value!r} starts or ends with whitespace")
    bad = [part for part in _BAD_KEY_PARTS if part in value]
    bad += sorted({repr(c) for c in value if ord(c) < 32 or ord(c) == 127})
    if bad:
        raise ValidationError(f"{value!r} contains {', '.join(bad)}, which Dagster refuses in keys")


def timezone(value: str) -> None:
    """An IANA timezone name."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not a known IANA timezone") from None


def parse_date(value: str, fmt: str) -> datetime:
    """Parse a partition boundary with the pipeline's fmt, falling back to ISO 8601."""
    try:
        return datetime.strptime(value, fmt)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{value!r} does not match format {fmt!r} or ISO 8601") from None


def relative_path(value: str) -> None:
    """A path that stays inside the pipeline folder."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValidationError(f"{value!r} must be a relative path inside the pipeline folder")


def source_ref(value: str) -> None:
    """`file.py:function` inside the pipeline folder."""
    file, sep, func = value.partition(":")
    if not sep or not file.endswith(".py") or not func.isidentifier():
        raise ValidationError(f"{value!r} must look like 'pipeline.py:function_name'")
    relative_path(file)
