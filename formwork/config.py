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
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
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
    }
