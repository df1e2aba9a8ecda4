"""Secrets never reach a message: every ``SyncerError`` is redacted as it is made.

A registry's error body, reason phrase or redirect may echo what it was sent, the
Authorization header included; such text flows into messages that are printed, written to
the CI step summary and committed under ``reports/``. The values are registered where they
enter the process (credentials read from the environment, tokens received) and replaced by
``***`` in every error message, whichever module made it. Echoes of an ``Authorization``
header and JWT-shaped tokens are redacted even when their value is not known here (a token
skopeo or Trivy fetched for themselves).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from urllib.parse import quote

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()

# ``Authorization: Basic …``, ``"authorization": "Bearer …"``, ``Authorization=…``
_HEADER_ECHO = re.compile(
    r"(?i)\b((?:proxy-)?authorization)([\"']?\s*[:=]\s*[\"']?)((?:basic|bearer)\s+)?[^\s\"',;]+"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def remember(secret: str) -> None:
    """Redact ``secret`` from now on, also as JSON and URLs would escape it."""
    if not secret:
        return
    forms = {secret, json.dumps(secret)[1:-1], quote(secret, safe="")}
    with _lock:
        _secrets.update(forms)


def remember_credentials(username: str, password: str) -> None:
    """A password, and the Basic credential made of it."""
    if not password:
        return
    pair = f"{username}:{password}"
    remember(password)
    remember(pair)
    remember(base64.b64encode(pair.encode()).decode())


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # a longer form before its parts
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = _HEADER_ECHO.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}{MASK}", text)
    return _JWT.sub(MASK, text)
