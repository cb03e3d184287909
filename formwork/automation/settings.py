"""The automation engine's knobs, from the Flask config (``AUTOMATION_*``) and the worker's command line."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from formwork.automation.delivery import SmtpSettings


@dataclass
class Settings:
    """Limits, retries and mail settings shared by intake, runs, the scheduler and the dispatcher."""

    smtp: SmtpSettings
    allow_private: bool = False
    max_depth: int = 5
    max_attempts: int = 5
    retry_base: float = 30.0
    retry_cap: float = 3600.0
    grace: dt.timedelta = dt.timedelta(hours=1)
    # date reminders missed while no worker ran fire once when one returns, back to this far
    date_catch_up: dt.timedelta = dt.timedelta(days=31)
    lease: float = 30.0
    secret: bytes = b"formwork"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        env = os.environ
        smtp = SmtpSettings(host=config.get("SMTP_HOST", "localhost"), port=int(config.get("SMTP_PORT", 25)),
                            username=config.get("SMTP_USERNAME"), password=config.get("SMTP_PASSWORD"),
                            tls=config.get("SMTP_TLS", "none"), mail_from=config.get("MAIL_FROM", "formwork@localhost"),
                            helo_name=config.get("SMTP_HELO") or env.get("FORMWORK_SMTP_HELO")
                            or ("localhost" if config.get("TESTING") else None))

        def num(key: str, default: float) -> float:
            return float(config.get(key) or env.get(f"FORMWORK_{key}") or default)

        return cls(smtp=smtp, allow_private=bool(config.get("WEBHOOK_ALLOW_PRIVATE")),
                   max_depth=int(num("AUTOMATION_MAX_DEPTH", 5)),
                   max_attempts=int(num("AUTOMATION_MAX_ATTEMPTS", 5)),
                   retry_base=num("AUTOMATION_RETRY_BASE", 30), retry_cap=num("AUTOMATION_RETRY_CAP", 3600),
                   grace=dt.timedelta(seconds=num("AUTOMATION_GRACE_SECONDS", 3600)),
                   date_catch_up=dt.timedelta(days=num("AUTOMATION_DATE_CATCH_UP_DAYS", 31)),
                   lease=num("AUTOMATION_LEASE_SECONDS", 30),
                   secret=str(config.get("SECRET_KEY", "formwork")).encode())
