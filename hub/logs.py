"""Logging set-up: secrets in URLs (sign-in links, invitations, OAuth codes) never reach the log."""

from __future__ import annotations

import logging
import re
from typing import Any

_SECRET_PATH = re.compile(r"^(/(?:login|setup|invite)/)[^/?\s]+")


def redact_path(path: str) -> str:
    path, _, query = path.partition("?")
    path = _SECRET_PATH.sub(r"\1[redacted]", path)
    return f"{path}?[redacted]" if query else path


class RedactAccessLog(logging.Filter):
    """uvicorn's access log passes (client, method, path, version, status) as arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            record.args = (client, method, redact_path(str(path)), version, status)
        return True


def uvicorn_log_config(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactAccessLog}},
        "formatters": {
            "default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "access": {"format": "%(asctime)s %(levelname)s access: %(message)s"},
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "filters": ["redact"],
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            "gpuclub": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
