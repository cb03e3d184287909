"""Schedules of time-based automation rules.

Users write either a standard 5-field cron expression with a time zone::

    {"cron": "0 9 * * 1-5", "timezone": "Asia/Shanghai"}

or a friendly form::

    {"every": "day" | "weekday" | "week" | "month" | "hour",
     "at": "09:00",          # "HH:MM"; for "hour" the minute, "MM" or ":MM"; default 00:00
     "weekday": "mon",       # only for "week" (default mon)
     "day": 1,               # only for "month": 1-31 or "last" (default 1)
     "timezone": "Asia/Shanghai"}   # IANA name, default UTC

Cron day-of-week numbers follow crontab (0 and 7 = Sunday, 1 = Monday); they are
translated because APScheduler 3 counts 0 as Monday.  Restricting both
day-of-month and day-of-week is refused: crontab treats that as "either", which
APScheduler cannot express and users rarely mean.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

__all__ = ["ScheduleError", "due_firings", "parse_schedule"]

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_ALIASES = {name: i for i, name in enumerate(_CRON_DAYS)} | {
    "sunday": 0, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6,
}
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EVERY = ("hour", "day", "weekday", "week", "month")
_ALLOWED_KEYS = {"cron": {"cron", "timezone"}, "every": {"every", "at", "weekday", "day", "timezone"}}
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_MINUTE = re.compile(r"^:?([0-5]?\d)$")
_DOW_ITEM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


class ScheduleError(ValueError):
    """A schedule the user wrote cannot be used; the message says why."""


def _zone(spec: Mapping[str, Any]) -> ZoneInfo:
    name = spec.get("timezone") or "UTC"
    if not isinstance(name, str):
        raise ScheduleError("Time zone must be a name such as 'Asia/Shanghai'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"Unknown time zone {name!r}; use a name such as 'Asia/Shanghai' or 'UTC'") from None


def _cron_day(token: str) -> int:
    if token.isdigit() and int(token) <= 7:
        return int(token) % 7
    if token in _DAY_ALIASES:
        return _DAY_ALIASES[token]
    raise ScheduleError(f"Unknown day of week {token!r} in cron expression (use 0-7 or sun-sat)")


def _translate_day_of_week(field: str) -> str:
    """Turn a crontab day-of-week field into APScheduler day names."""
    days: set[int] = set()
    for item in field.lower().split(","):
        match = _DOW_ITEM.match(item)
        if not match:
            raise ScheduleError(f"Invalid day of week {item!r} in cron expression")
        step = int(match["step"] or 1)
        if step < 1:
            raise ScheduleError("Step in day of week must be at least 1")
        if match["range"] == "*":
            first, last = 0, 6
        elif "-" in match["range"]:
            start, end = match["range"].split("-")
            first, last = _cron_day(start), _cron_day(end)
            if last == 0 and first > 0:
                last = 7  # "5-7" or "mon-sun": Sunday at the end of the week
            if last < first:
                raise ScheduleError(f"Day range {match['range']!r} runs backwards")
        else:
            first = last = _cron_day(match["range"])
            if match["step"]:
                last = 6
        days.update(day % 7 for day in range(first, last + 1, step))
    if len(days) == 7:
        return "*"
    ordered = sorted(days, key=lambda d: (d - 1) % 7)  # Monday first, as APScheduler lists them
    return ",".join(_CRON_DAYS[d] for d in ordered)


def _from_cron(expr: object, zone: ZoneInfo) -> CronTrigger:
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError("Cron expression must be text such as '0 9 * * 1-5'")
    text = _NICKNAMES.get(expr.strip().lower(), expr.strip())
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"Cron expression {expr!r} must have 5 fields: minute hour day-of-month month day-of-week"
        )
    minute, hour, day, month, day_of_week = fields
    if day not in ("*", "?") and day_of_week not in ("*", "?"):
        raise ScheduleError(
            "Cron expression restricts both day of month and day of week; use only one of them"
        )
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day="*" if day == "?" else day,
            month=month,
            day_of_week="*" if day_of_week == "?" else _translate_day_of_week(day_of_week),
            second=0,
            timezone=zone,
        )
    except ScheduleError:
        raise
    except ValueError as exc:
        raise ScheduleError(f"Invalid cron expression {expr!r}: {exc}") from None


def _hour_minute(at: object, default: str = "00:00") -> tuple[int, int]:
    text = default if at is None else at
    match = _TIME.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ScheduleError(f"Time {at!r} is not valid; use 24-hour 'HH:MM' such as '09:00'")
    return int(match[1]), int(match[2])


def _from_every(spec: Mapping[str, Any], zone: ZoneInfo) -> CronTrigger:
    every = spec["every"]
    if every not in _EVERY:
        raise ScheduleError(f"'every' must be one of {', '.join(_EVERY)}; got {every!r}")
    for key, allowed_for in (("weekday", "week"), ("day", "month")):
        if key in spec and every != allowed_for:
            raise ScheduleError(f"'{key}' only applies to every {allowed_for!r}")
    at = spec.get("at")
    if every == "hour":
        match = _MINUTE.match(at.strip()) if isinstance(at, str) else None
        if at is not None and not match:
            raise ScheduleError(f"For an hourly schedule 'at' is the minute, such as ':15'; got {at!r}")
        return CronTrigger(minute=int(match[1]) if match else 0, second=0, timezone=zone)
    hour, minute = _hour_minute(at)
    fields: dict[str, Any] = {"hour": hour, "minute": minute, "second": 0}
    if every == "weekday":
        fields["day_of_week"] = "mon-fri"
    elif every == "week":
        weekday = spec.get("weekday", "mon")
        if not isinstance(weekday, str) or weekday.strip().lower() not in _DAY_ALIASES:
            raise ScheduleError(f"Unknown weekday {weekday!r}; use mon, tue, wed, thu, fri, sat or sun")
        fields["day_of_week"] = _CRON_DAYS[_DAY_ALIASES[weekday.strip().lower()]]
    elif every == "month":
        day = spec.get("day", 1)
        if day == "last":
            fields["day"] = "last"
        elif isinstance(day, int) and not isinstance(day, bool) and 1 <= day <= 31:
            fields["day"] = day
        else:
            raise ScheduleError(f"Day of month must be 1-31 or 'last'; got {day!r}")
    return CronTrigger(timezone=zone, **fields)


def parse_schedule(spec: Mapping[str, Any]) -> CronTrigger:
    """Build an APScheduler CronTrigger from a user schedule; raises ScheduleError.

    For the monthly form, days 29-31 skip months that do not have them (use
    ``"last"`` for the last day of every month).
    """
    if not isinstance(spec, Mapping):
        raise ScheduleError("Schedule must be an object")
    kinds = [kind for kind in _ALLOWED_KEYS if kind in spec]
    if len(kinds) != 1:
        raise ScheduleError("Schedule needs exactly one of 'cron' or 'every'")
    unknown = sorted(set(spec) - _ALLOWED_KEYS[kinds[0]])
    if unknown:
        raise ScheduleError(f"Unknown schedule field {unknown[0]!r}")
    zone = _zone(spec)
    trigger = _from_cron(spec["cron"], zone) if kinds[0] == "cron" else _from_every(spec, zone)
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ScheduleError("Schedule never fires (for example 30 February)")
    return trigger


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleError(f"{name} must be a timezone-aware datetime")


def due_firings(
    spec: Mapping[str, Any] | CronTrigger,
    last_fired: datetime | None,
    now: datetime,
    grace: timedelta,
) -> list[datetime]:
    """Firing times (aware UTC) that should run now, coalesced to at most one.

    * With ``last_fired``: the latest firing time in ``(last_fired, now]`` is
      returned if it is no older than ``grace``; earlier missed firings (after
      downtime) are dropped, and if even the latest is older than ``grace``
      nothing runs.
    * With ``last_fired=None`` (no history) historical times are never fired: only a
      firing at exactly ``now`` (to the second) is returned.  Workers should store a
      baseline such as the rule's creation time and pass it as ``last_fired`` so a
      firing between two ticks is not missed.

    The worker should use ``(rule id, firing time ISO)`` as a unique key so each
    firing runs once across workers.
    """
    _require_aware(now, "now")
    if last_fired is not None:
        _require_aware(last_fired, "last_fired")
    if grace < timedelta(0):
        raise ScheduleError("grace must not be negative")
    trigger = spec if isinstance(spec, CronTrigger) else parse_schedule(spec)
    now = now.astimezone(UTC)

    if last_fired is None:
        exact = now.replace(microsecond=0)
        candidate = trigger.get_next_fire_time(None, exact)
        return [candidate.astimezone(UTC)] if candidate is not None and candidate == exact else []

    # Only firings within grace can be returned, so nothing before ``lower`` matters.
    after_last = last_fired.astimezone(UTC) + timedelta(microseconds=1)
    try:
        lower = max(now - grace, after_last)
    except OverflowError:
        lower = after_last
    if lower > now:
        return []
    # Probe backwards from now with doubling steps until a firing <= now shows up, so
    # the cost stays logarithmic however long the downtime or the grace window.
    step = timedelta(seconds=1)
    while True:
        probe = max(now - step, lower) if step < now - lower else lower
        candidate = trigger.get_next_fire_time(None, probe)
        if candidate is not None and candidate <= now:
            break
        if probe == lower:
            return []
        step *= 2
    latest = candidate
    while candidate is not None and candidate <= now:
        latest = candidate
        candidate = trigger.get_next_fire_time(None, candidate + timedelta(microseconds=1))
    return [latest.astimezone(UTC)]
