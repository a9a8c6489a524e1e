"""Structured logging with request and trace ids and secret redaction.

Two formats (``telemetry.log_format``): ``text``, key=value lines, and ``json``, one object per line with
``timestamp``, ``level``, ``logger``, ``message`` and, on every line, ``request_id``, ``trace_id`` and
``span_id`` (null outside a request or outside a recorded span). Both go through the same redaction.

Two layers keep secrets out of every log sink:

* **patterns**: anything shaped like a credential (Atrium keys, ``sk-``/``AKIA``/``ghp_``-style vendor
  keys, anything named like a key, JWTs, bearer/basic credentials, private-key blocks,
  ``password=...``/``"token": "..."`` pairs, URL user-info passwords) is masked (the shapes:
  ``telemetry/credentials.py``);
* **known values**: every secret the settings hold (provider keys, the bootstrap admin key, the JWT
  secret, database and Redis passwords, ...) is registered at start-up and masked wherever it appears,
  whatever its shape.

SQL parameters and result rows never reach a log, whatever the level: they hold password hashes, key and
refresh-token hashes and document text, which no pattern recognises. The database loggers (``aiosqlite``,
which logs every call with its arguments at DEBUG, and SQLAlchemy's engine and pool) are capped at WARNING,
the arguments of any record they still emit are replaced, and the ``[parameters: ...]`` part of SQLAlchemy
error messages is masked.

Redaction happens when a log record is *created* (a ``logging`` record factory), not only in Atrium's
own formatter: so records from stdlib loggers (uvicorn, httpx, SQLAlchemy), pytest's ``caplog`` and any
handler an operator adds all receive the redacted message, arguments, traceback and stack. structlog
events are redacted by the ``redact_secrets`` processor too.

The record factory and the set of known secrets are process-wide on purpose: ``logging`` itself is
process-wide, and a secret one app instance knows must not appear in a record another part of the
process writes.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import IO, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog
from opentelemetry import trace
from pydantic import BaseModel, SecretStr

from atrium.telemetry.credentials import BEARER, CREDENTIAL_PATTERN, KEY_LIKE, SECRET_NAME, SECRET_WORD

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

MASK = "[REDACTED]"
MIN_KNOWN_SECRET = 8  # shorter configured values are left to the patterns (masking "pw" would mangle text)

# A credential after a marker: only the last group is the secret.
_AFTER_MARKER = [
    BEARER,
    re.compile(r"(?i)(\bbasic\s+)([A-Za-z0-9+/]{8,}=*)"),
    # "password": "..." in JSON (the whole quoted value, spaces included)
    re.compile(rf'(?i)("[A-Za-z_\-]*(?:{SECRET_WORD})[A-Za-z_\-]*"\s*:\s*")((?:[^"\\]|\\.)+)'),
    # password=..., api_key: ..., ?token=...
    re.compile(rf"(?i)(\b[A-Za-z_\-]*(?:{SECRET_WORD})\b['\"]?\s*[=:]\s*['\"]?)([^\s,;\"'&<>]+)"),
    # scheme://user:password@host, scheme://:password@host (Redis)
    re.compile(r"(://[^:/@\s]*:)([^@\s/]+)(?=@)"),
    # SQLAlchemy errors quote the statement's parameters: "[parameters: ('hash', 'text')]" (one line)
    re.compile(r"(\[parameters: )([^\n]*)(?=\])"),
]


class _Known:
    """Exact secret values to mask, longest first (so a secret containing another is masked whole)."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            fresh = {value for value in values if len(value) >= MIN_KNOWN_SECRET} - self._values
            if not fresh:
                return
            self._values |= fresh
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(value) for value in ordered))

    def sub(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text


_known = _Known()


def register_secrets(values: Iterable[str]) -> None:
    """Mask these exact values in every log record and ``redact`` call from now on."""
    _known.add(values)


def redact(text: str) -> str:
    """``text`` with every known secret and every credential-looking string masked."""
    if not text:
        return text
    text = _known.sub(text)
    text = KEY_LIKE.sub(MASK, CREDENTIAL_PATTERN.sub(MASK, text))
    for pattern in _AFTER_MARKER:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


def redact_value(value: Any) -> Any:
    """``redact`` applied through strings, mappings and sequences (other values as they are)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: MASK if isinstance(item, str) and item and isinstance(key, str) and SECRET_NAME.search(key)
                else redact_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact_value(item) for item in value)
    return value


def secrets_of(settings: BaseModel) -> list[str]:
    """Every secret a settings object holds: each ``SecretStr`` (URLs contribute their password, and the
    whole URL), found recursively, plus keys named by ``api_key_env`` variables."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            found.append(raw)
            password = _url_password(raw)
            if password:
                found.append(password)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                item = getattr(value, name)
                if name == "api_key_env" and isinstance(item, str) and os.environ.get(item):
                    found.append(os.environ[item].strip())
                walk(item)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    return [value for value in found if value]


def _url_password(url: str) -> str | None:
    """The password in a URL's user info, or in its ``password=`` query parameter (Redis URLs)."""
    if "://" not in url:
        return None
    try:
        parts = urlsplit(url)
        password = parts.password or dict(parse_qsl(parts.query)).get("password")
    except ValueError:
        return None
    return unquote(password) if password else None


# --- stdlib records -----------------------------------------------------------------------------------

# Loggers whose arguments are SQL parameters, result rows or connections: capped, and their records'
# arguments hidden (``aiosqlite`` logs each call as "executing functools.partial(<execute>, sql, params)").
DATA_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "sqlalchemy.dialects", "sqlalchemy.orm")
HIDDEN = "[hidden]"


def _is_data_logger(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in DATA_LOGGERS)


def _hidden(arg: Any) -> Any:
    return arg if arg is None or isinstance(arg, bool | int | float) else HIDDEN  # numbers keep %d working


def cap_data_loggers() -> None:
    """Set the database loggers to WARNING, whatever the application's level: at INFO and DEBUG they log
    SQL parameters and result rows (``redact_record`` hides the arguments of any record they still emit)."""
    for name in DATA_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _redact_arg(arg: Any) -> Any:
    if arg is None or isinstance(arg, bool | int | float):
        return arg
    if isinstance(arg, str):
        return redact(arg)
    try:
        shown = str(arg)
    except Exception:
        return arg
    clean = redact(shown)
    return arg if clean == shown else clean


def redact_record(record: logging.LogRecord) -> None:
    """Mask secrets in a record's message, arguments, traceback and stack, in place; a database logger's
    arguments (SQL parameters, rows) are hidden whole."""
    if record.args and _is_data_logger(record.name):
        hidden = record.args
        record.args = ({key: _hidden(value) for key, value in hidden.items()} if isinstance(hidden, Mapping)
                       else tuple(_hidden(arg) for arg in hidden))
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    elif record.msg is not None and not isinstance(record.msg, int | float):
        record.msg = _redact_arg(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_redact_arg(arg) for arg in args)
    elif isinstance(args, Mapping):
        record.args = {key: _redact_arg(value) for key, value in args.items()}
    if record.exc_info and not record.exc_text:
        # Rendered now, redacted, and kept: every Formatter uses ``exc_text`` when it is set.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_record_redaction() -> None:
    """Make every ``logging`` record redacted at creation, and cap the database loggers (idempotent)."""
    cap_data_loggers()
    current = logging.getLogRecordFactory()
    if getattr(current, "atrium_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        redact_record(record)
        return record

    factory.atrium_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# --- structlog ----------------------------------------------------------------------------------------

def redact_secrets(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if key.startswith("_"):  # structlog's own (the stdlib record, ...)
            continue
        event[key] = redact_value(value)
    return event


def add_request_id(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    request_id = request_id_var.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def add_trace_ids(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """``trace_id`` and ``span_id`` of the current span (W3C hex), when one is being recorded."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


_ALWAYS = ("request_id", "trace_id", "span_id")


def every_line_keys(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """JSON lines keep one shape: the correlation keys are present on every line (null when unknown)."""
    for key in _ALWAYS:
        event.setdefault(key, None)
    return event


LogFormat = Literal["text", "json"]


def log_formatter(fmt: LogFormat = "text") -> logging.Formatter:
    """The redacting formatter of stdlib and structlog records in ``fmt``."""
    shared = _shared_processors()
    meta = structlog.stdlib.ProcessorFormatter.remove_processors_meta
    processors: list[Any] = (
        [structlog.stdlib.add_logger_name, meta, every_line_keys, structlog.processors.EventRenamer("message"),
         structlog.processors.JSONRenderer(sort_keys=False)]
        if fmt == "json" else [meta, structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"])])
    return structlog.stdlib.ProcessorFormatter(
        processors=processors,
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
    )


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        add_request_id,
        add_trace_ids,
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


def configure_logging(level: str, fmt: LogFormat = "text", stream: IO[str] | None = None) -> None:
    """Route stdlib and structlog records through one redacting renderer (``fmt``: key=value text or JSON
    lines) on ``stream`` (default: stderr)."""
    install_record_redaction()
    shared = _shared_processors()
    formatter = log_formatter(fmt)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request client logs would drown the server's own lines (and can carry upstream URLs).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
