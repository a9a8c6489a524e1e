"""What a credential looks like: the one set of patterns behind log redaction (``telemetry/logging.py``), the
``secret`` type of the PII guard (``guard/pii.py``) and the scrubbing of upstream error text by the provider
adapters (``gateway/providers/base.py``).

* :data:`CREDENTIAL_PATTERN`: shapes that are credentials wherever they appear (the match is the secret):
  Atrium keys and refresh tokens, vendor keys, JWTs, private-key blocks. Precise enough for user text.
  :data:`KEY_PREFIXES` is a cheap test that rules it out (every shape begins with one of these).
* :data:`KEY_LIKE`: looser, anything named like a key (``sk-``, ``sk_``, ``gsk_``, ``key-``, ``atr-``
  followed by 8 key characters, masked ones with ``*`` included), and :data:`BEARER`, whatever follows
  "bearer" (group 2; group 1 is the marker). For text where a false positive costs little (logs, an
  upstream's error message), not for a user's prompt.
* :data:`SECRET_WORD` / :data:`SECRET_NAME`: the words that mark a secret (``password=...``, ``"token": ...``)
  and the names of fields, headers and query parameters whose value is one.
"""

from __future__ import annotations

import re

_SHAPES = (
    r"atrr?_[A-Za-z0-9_\-]{8,}",  # API keys (atr_) and refresh tokens (atrr_)
    r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{8,}",
    r"\bsk_(?:live|test)_[A-Za-z0-9]{10,}",
    r"\bgsk_[A-Za-z0-9]{20,}",
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bglpat-[A-Za-z0-9_\-]{20,}",
    r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    r"\bAIza[0-9A-Za-z_\-]{35}",
    r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
)
CREDENTIAL_PATTERN = re.compile("|".join(f"(?:{shape})" for shape in _SHAPES))
KEY_PREFIXES = re.compile(r"atrr?_|sk-|sk_|gsk_|AKIA|ASIA|AGPA|AIDA|AROA|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|"
                          r"AIza|eyJ|-----BEGIN")

KEY_LIKE = re.compile(r"(?i)\b(?:sk|atr|gsk|key)[-_][A-Za-z0-9_\-*.]{8,}")
BEARER = re.compile(r"(?i)(\bbearer\s+)(\S+)")

# Inside a longer name, as in ``db_password``, ``X-Api-Key`` or ``refresh_token``.
SECRET_WORD = r"password|passwd|pwd|secret|api[_-]?key|access[_-]?key|key|token|credential|authorization"
SECRET_NAME = re.compile(rf"(?i){SECRET_WORD}|auth|sig")
