"""Time zones as people name them: "(UTC+08:00) 北京、上海" in Chinese, "(UTC+08:00) Beijing, Shanghai" in
English, never the raw IANA name (``Asia/Shanghai``) where a name exists. The stored value stays the IANA
name; the pickers show the common zones by name (all of them in English; in Chinese the named ones, plus
whatever zone is already chosen)."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

#: the zones our users live and work in, with their names in each language (west to east within a region)
NAMED: tuple[tuple[str, str, str], ...] = (
    ("Asia/Shanghai", "Beijing, Shanghai (China)", "北京、上海（中国）"),
    ("Asia/Hong_Kong", "Hong Kong", "香港"),
    ("Asia/Macau", "Macau", "澳门"),
    ("Asia/Taipei", "Taipei", "台北"),
    ("Asia/Urumqi", "Urumqi", "乌鲁木齐"),
    ("Asia/Singapore", "Singapore", "新加坡"),
    ("Asia/Kuala_Lumpur", "Kuala Lumpur", "吉隆坡"),
    ("Asia/Bangkok", "Bangkok", "曼谷"),
    ("Asia/Ho_Chi_Minh", "Ho Chi Minh City", "胡志明市"),
    ("Asia/Jakarta", "Jakarta", "雅加达"),
    ("Asia/Manila", "Manila", "马尼拉"),
    ("Asia/Tokyo", "Tokyo", "东京"),
    ("Asia/Seoul", "Seoul", "首尔"),
    ("Asia/Kolkata", "India", "印度"),
    ("Asia/Dubai", "Dubai", "迪拜"),
    ("Asia/Riyadh", "Riyadh", "利雅得"),
    ("Europe/Moscow", "Moscow", "莫斯科"),
    ("Europe/Istanbul", "Istanbul", "伊斯坦布尔"),
    ("Europe/London", "London", "伦敦"),
    ("Europe/Paris", "Paris", "巴黎"),
    ("Europe/Berlin", "Berlin", "柏林"),
    ("Europe/Madrid", "Madrid", "马德里"),
    ("Europe/Rome", "Rome", "罗马"),
    ("Africa/Cairo", "Cairo", "开罗"),
    ("Africa/Johannesburg", "Johannesburg", "约翰内斯堡"),
    ("Africa/Lagos", "Lagos", "拉各斯"),
    ("America/Sao_Paulo", "São Paulo", "圣保罗"),
    ("America/Mexico_City", "Mexico City", "墨西哥城"),
    ("America/New_York", "New York (US Eastern)", "纽约（美国东部）"),
    ("America/Chicago", "Chicago (US Central)", "芝加哥（美国中部）"),
    ("America/Denver", "Denver (US Mountain)", "丹佛（美国山地）"),
    ("America/Los_Angeles", "Los Angeles (US Pacific)", "洛杉矶（美国太平洋）"),
    ("America/Toronto", "Toronto", "多伦多"),
    ("America/Vancouver", "Vancouver", "温哥华"),
    ("Australia/Perth", "Perth", "珀斯"),
    ("Australia/Sydney", "Sydney", "悉尼"),
    ("Pacific/Auckland", "Auckland", "奥克兰"),
    ("UTC", "Coordinated Universal Time", "协调世界时"),
)
_NAMES = {zone: {"en": en, "zh-CN": zh} for zone, en, zh in NAMED}


def _offset(zone: str) -> str:
    try:
        delta = dt.datetime.now(ZoneInfo(zone)).utcoffset() or dt.timedelta(0)
    except (KeyError, ValueError):
        return "UTC"
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def zone_name(zone: str, locale: str) -> str:
    """A zone's name in the reader's language ("北京、上海（中国）"); the IANA city for zones without one."""
    names = _NAMES.get(zone)
    if names is not None:
        return names.get(locale) or names["en"]
    return zone.rsplit("/", 1)[-1].replace("_", " ")


def zone_label(zone: str, locale: str) -> str:
    """What a picker shows: "(UTC+08:00) 北京、上海（中国）"."""
    return f"({_offset(zone)}) {zone_name(zone, locale)}"


@lru_cache(maxsize=1)
def _all_zones() -> tuple[str, ...]:
    return tuple(sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))))


def zone_choices(locale: str, *chosen: str | None) -> list[tuple[str, str]]:
    """The picker's (value, label) pairs: the named zones first, then (in English) every other zone; zones
    already chosen are always offered."""
    zones = [z for z, _en, _zh in NAMED]
    if not locale.startswith("zh"):
        zones += [z for z in _all_zones() if z not in _NAMES]
    for z in chosen:
        if z and z not in zones:
            zones.insert(0, z)
    return [(z, zone_label(z, locale)) for z in zones]
