"""Configuration from the environment (FORMWORK_*), with defaults that run out of the box."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any


def instance_dir() -> Path:
    path = Path(os.environ.get("FORMWORK_INSTANCE", "instance")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _secret_key() -> str:
    key = os.environ.get("FORMWORK_SECRET_KEY")
    if key:
        return key
    path = instance_dir() / "secret_key"
    try:
        # created owner-only in one step (never world-readable for a moment); O_EXCL: two processes
        # starting together can't both write one, the loser reads the winner's
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def from_env() -> dict[str, Any]:
    env = os.environ
    return {
        "DATABASE_URL": env.get("FORMWORK_DATABASE_URL") or f"sqlite:///{instance_dir() / 'formwork.db'}",
        "SECRET_KEY": _secret_key(),
        "SMTP_HOST": env.get("FORMWORK_SMTP_HOST", "localhost"),
        "SMTP_PORT": int(env.get("FORMWORK_SMTP_PORT", "25")),
        "SMTP_USERNAME": env.get("FORMWORK_SMTP_USERNAME"),
        "SMTP_PASSWORD": env.get("FORMWORK_SMTP_PASSWORD"),
        "SMTP_TLS": env.get("FORMWORK_SMTP_TLS", "none"),
        "MAIL_FROM": env.get("FORMWORK_MAIL_FROM", "formwork@localhost"),
        "WEBHOOK_ALLOW_PRIVATE": env.get("FORMWORK_WEBHOOK_ALLOW_PRIVATE") == "1",
        "FILES_DIR": env.get("FORMWORK_FILES_DIR") or str(instance_dir() / "files"),
        "MAX_CONTENT_LENGTH": int(env.get("FORMWORK_MAX_UPLOAD_MB", "50")) * 1024 * 1024,
        # the login limiter's shared window lives in Redis when one is named (else in the database)
        "REDIS_URL": env.get("FORMWORK_REDIS_URL") or None,
        "REDIS_PREFIX": env.get("FORMWORK_REDIS_PREFIX") or "formwork",
    }
