"""Keep credentials out of everything DetPose logs, at every verbosity.

``-v`` turns on botocore's and s3fs's debug logs, which print request headers (the access
key id in ``Credential=``, session tokens) and client settings. A filter on the root
handlers rewrites each record before it is written: known secret values (from the
environment and the job spec) and credential-shaped fields become ``<redacted>``.
"""

from __future__ import annotations

import logging
import os
import re

from schemas.spec import StorageSpec

REDACTED = "<redacted>"
_SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "RAY_AUTH_TOKEN",
)
# Shorter values would redact ordinary words; real keys are 16+ characters.
_MIN_SECRET_LEN = 4
_PATTERNS = (
    re.compile(r"(Credential=)[^/\s,'\"]+"),
    re.compile(r"(X-Amz-Credential=)[^/&\s'\"]+"),
    re.compile(r"((?i:x-amz-security-token)['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,&}]+"),
    re.compile(
        r"((?:aws_)?(?:access_key_id|secret_access_key|session_token)['\"]?\s*[:=]\s*['\"]?)"
        r"[^'\"\s,}]+"
    ),
)
_secrets: set[str] = set()


def redact(text: str) -> str:
    """``text`` with every known secret and credential-shaped field replaced."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _add(value: str | None) -> None:
    if value and len(value) >= _MIN_SECRET_LEN:
        _secrets.add(value)


def register_secrets(storage: StorageSpec | None = None) -> None:
    """Remember the environment's credentials and those of ``storage`` for redaction."""
    for name in _SECRET_ENV:
        _add(os.environ.get(name))
    if storage is not None:
        for field in (storage.access_key_id, storage.secret_access_key, storage.session_token):
            _add(field.get_secret_value() if field is not None else None)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message (arguments merged in) with secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def install() -> None:
    """Attach the filter to every root handler (child loggers' records pass through them)."""
    register_secrets()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
