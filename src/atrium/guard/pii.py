"""PII detection and reversible redaction.

``detect(text)`` finds personal data and secrets with their spans and types:

=============== ==========================================================================================
type            what is found (a candidate must also pass its check, so random digit runs do not match)
=============== ==========================================================================================
``email``       addresses with a dotted domain
``phone``       E.164 (``+44 20 7946 0958``), North-American ``(415) 555-0132`` / ``415-555-0132``, and
                national numbers with a trunk ``0`` (``020 7946 0958``, ``06 12 34 56 78``); a number
                needs 8-15 digits (E.164) or 9-12 (national), so years, amounts and dates do not match
``card``        13-19 digits (spaces or dashes allowed) with a card network's prefix and a valid Luhn
                check digit (``stdnum.luhn``)
``iban``        IBANs, grouped or not, validated by ``stdnum.iban`` (country length and mod-97)
``national_id`` US SSN, UK NINO, Spanish DNI/NIE, Italian codice fiscale, French NIR, Brazilian CPF,
                Indian Aadhaar, Canadian SIN, Swedish personnummer, Danish CPR, Finnish HETU, Swiss AHV,
                Belgian national number: each in its written format, validated by ``stdnum``
``ip``          IPv4 and IPv6 addresses (``ipaddress`` validates them)
``secret``      API keys and tokens (``atr_``, ``sk-``, ``AKIA``, ``ghp_``, Slack, Google, JWTs, private
                key blocks; see ``atrium.telemetry.logging``) and high-entropy values after ``key=``,
                ``token:``, ``secret=``, ``password=``, ``Bearer``
=============== ==========================================================================================

``Redaction`` replaces each distinct value with a placeholder (``[EMAIL_1]``, ``[PHONE_2]``...) that is
stable within one call, keeps the mapping in memory for that call only, and restores the placeholders in
the model's answer, also while it streams (``StreamRestorer`` holds back a placeholder cut across two
chunks). A false positive costs little: the value is hidden from the provider and put back in the answer.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from stdnum import iban, luhn
from stdnum.be import nn as be_nn
from stdnum.br import cpf as br_cpf
from stdnum.ca import sin as ca_sin
from stdnum.ch import ssn as ch_ssn
from stdnum.dk import cpr as dk_cpr
from stdnum.es import dni as es_dni
from stdnum.es import nie as es_nie
from stdnum.fi import hetu as fi_hetu
from stdnum.fr import nir as fr_nir
from stdnum.in_ import aadhaar as in_aadhaar
from stdnum.it import codicefiscale as it_cf
from stdnum.se import personnummer as se_pn
from stdnum.us import ssn as us_ssn

from atrium.guard.settings import PiiKind
from atrium.telemetry.credentials import CREDENTIAL_PATTERN, KEY_PREFIXES, SECRET_WORD

PII_TYPES: tuple[PiiKind, ...] = ("secret", "card", "iban", "national_id", "email", "ip", "phone")  # priority
LABELS: dict[str, str] = {"email": "EMAIL", "phone": "PHONE", "card": "CARD", "iban": "IBAN",
                          "national_id": "NATIONAL_ID", "ip": "IP", "secret": "SECRET"}

PLACEHOLDER = re.compile(r"\[([A-Z]+(?:_[A-Z]+)*)_(\d{1,6})\]")
_PARTIAL_PLACEHOLDER = re.compile(r"\[[A-Z_]*\d*$")
MAX_PLACEHOLDER = 24


@dataclass(frozen=True, slots=True)
class Finding:
    type: PiiKind
    start: int
    end: int
    value: str = field(repr=False)  # never in a repr, so never in a log line by accident


# --- detectors ----------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]*@"
                    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])")
_CARD = re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d\-])")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|35|6)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})"
                   r"(?:%[\w.]+)?(?![\w:])")
_PHONE_INTL = re.compile(r"(?<![\w+])\+[1-9]\d{0,3}(?:[ .\-]?\(?\d{1,5}\)?){1,6}(?![\w\-])")
_PHONE_NANP = re.compile(r"(?<![\w(])(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .\-])\d{3}[ .\-]\d{4}(?![\w\-])")
_PHONE_NATIONAL = re.compile(r"(?<![\w+])0[1-9]\d{0,3}(?:[ .\-/]?\d{2,4}){2,4}(?![\w\-])")
_SECRET_AFTER_MARKER = re.compile(
    rf"(?i)(?:\b[\w\-]*(?:{SECRET_WORD})\b[\"']?\s*[=:]\s*[\"']?|\bbearer\s+)"
    r"([A-Za-z0-9_\-+/=.~]{12,})")
_NINO = re.compile(r"\b([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})

# (pattern, validator) for national ids written in their usual format.
_NATIONAL_IDS: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (
    (re.compile(r"(?<![\d\-])\d{3}-\d{2}-\d{4}(?![\d\-])"), us_ssn.is_valid),
    (re.compile(r"\b\d{8}-?[A-Z]\b"), es_dni.is_valid),
    (re.compile(r"\b[XYZ]-?\d{7}-?[A-Z]\b"), es_nie.is_valid),
    (re.compile(r"\b[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]\b"), it_cf.is_valid),
    (re.compile(r"(?<!\d)(?<!\d )[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?![\d])"), fr_nir.is_valid),
    (re.compile(r"(?<![\d.])\d{3}\.\d{3}\.\d{3}-\d{2}(?!\d)"), br_cpf.is_valid),
    (re.compile(r"(?<!\d)(?<!\d )[2-9]\d{3} \d{4} \d{4}(?! ?\d)"), in_aadhaar.is_valid),
    (re.compile(r"(?<![\d\-])\d{3}[\- ]\d{3}[\- ]\d{3}(?![\d\-])"), ca_sin.is_valid),
    (re.compile(r"(?<![\d\-])(?:\d{2})?\d{6}[\-+]\d{4}(?![\d\-])"), lambda v: se_pn.is_valid(v) or dk_cpr.is_valid(v)),
    (re.compile(r"(?<![\d\-])\d{6}[\-+A-FU-Y]\d{3}[0-9A-Y](?![\w])"), fi_hetu.is_valid),
    (re.compile(r"(?<![\d.])756\.\d{4}\.\d{4}\.\d{2}(?![\d.])"), ch_ssn.is_valid),
    (re.compile(r"(?<![\d.])\d{2}\.\d{2}\.\d{2}-\d{3}\.\d{2}(?!\d)"), be_nn.is_valid),
)


# Cheap tests that rule whole detectors out (most prompts hold no long digit runs and no key markers).
_SIX_DIGITS = re.compile(r"\d(?:[^\d\n]{0,3}\d){5}")
_MARKER_WORDS = ("key", "token", "secret", "password", "passwd", "pwd", "credential", "authorization", "bearer")


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _valid(check: Callable[[str], bool], value: str) -> bool:
    try:
        return bool(check(value))
    except Exception:  # a validator that chokes on odd input: not a match
        return False


def _emails(text: str) -> Iterable[tuple[int, int]]:
    for match in _EMAIL.finditer(text):
        yield match.span()


def _cards(text: str) -> Iterable[tuple[int, int]]:
    for match in _CARD.finditer(text):
        digits = _digits(match.group())
        if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn.is_valid(digits):
            yield match.span()


def _ibans(text: str) -> Iterable[tuple[int, int]]:
    for match in _IBAN.finditer(text):
        candidate = match.group()
        # The greedy match may run into the next words: try shorter ends at group boundaries too.
        ends = [len(candidate)] + [i for i in range(len(candidate) - 1, 14, -1) if candidate[i] == " "]
        for end in ends:
            if _valid(iban.is_valid, candidate[:end]):
                yield match.start(), match.start() + end
                break


def _national_ids(text: str) -> Iterable[tuple[int, int]]:
    for pattern, check in _NATIONAL_IDS:
        for match in pattern.finditer(text):
            if _valid(check, match.group()):
                yield match.span()
    for match in _NINO.finditer(text):
        if match.group(1) not in _NINO_BAD_PREFIXES:
            yield match.span()


def _ips(text: str) -> Iterable[tuple[int, int]]:
    for match in _IPV4.finditer(text):
        if _valid(lambda v: bool(ipaddress.IPv4Address(v)), match.group()):
            yield match.span()
    for match in _IPV6.finditer(text):
        value = match.group()
        groups = value.split("%", 1)[0].split(":")
        # "a::b" (slices in code) is a valid address; a real one has 3+ colons or a longer group.
        if value.count(":") < 3 and not any(len(g) >= 3 for g in groups):
            continue
        if _valid(lambda v: bool(ipaddress.IPv6Address(v)), value):
            yield match.span()


def _phones(text: str) -> Iterable[tuple[int, int]]:
    for match in _PHONE_INTL.finditer(text):
        if 8 <= len(_digits(match.group())) <= 15:
            yield match.span()
    for match in _PHONE_NANP.finditer(text):
        yield match.span()
    for match in _PHONE_NATIONAL.finditer(text):
        if 9 <= len(_digits(match.group())) <= 12:
            yield match.span()


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _secrets(text: str) -> Iterable[tuple[int, int]]:
    if KEY_PREFIXES.search(text):
        for match in CREDENTIAL_PATTERN.finditer(text):
            yield match.span()
    lowered = text.lower()
    if not any(word in lowered for word in _MARKER_WORDS):
        return
    for match in _SECRET_AFTER_MARKER.finditer(text):
        value = match.group(1)
        if _entropy(value) >= 3.0 and any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            yield match.span(1)


_DETECTORS: dict[str, Callable[[str], Iterable[tuple[int, int]]]] = {
    "secret": _secrets, "card": _cards, "iban": _ibans, "national_id": _national_ids, "email": _emails,
    "ip": _ips, "phone": _phones,
}


def detect(text: str, types: Iterable[str] = PII_TYPES) -> list[Finding]:
    """Non-overlapping findings in ``text``, in text order. Where two overlap, the type earlier in
    :data:`PII_TYPES` wins (a card number is not also a phone number), then the longer one."""
    wanted = set(types)
    if not _SIX_DIGITS.search(text):
        wanted -= {"card", "iban", "national_id", "phone"}
    if "@" not in text:
        wanted.discard("email")
    if "." not in text and ":" not in text:
        wanted.discard("ip")
    taken: list[Finding] = []
    for kind in PII_TYPES:
        if kind not in wanted:
            continue
        spans = sorted(set(_DETECTORS[kind](text)), key=lambda span: (span[0], -span[1]))
        for start, end in spans:
            if any(start < f.end and f.start < end for f in taken):
                continue
            taken.append(Finding(kind, start, end, text[start:end]))
    return sorted(taken, key=lambda f: f.start)


def found_types(findings: Iterable[Finding]) -> list[str]:
    return sorted({finding.type for finding in findings})


# --- reversible redaction -----------------------------------------------------------------------------

class Redaction:
    """Placeholders for one call: each distinct value gets ``[<TYPE>_<n>]``, the same value the same
    placeholder in every message. The mapping lives in this object only (never stored or logged).
    Placeholder numbers already present in the input are skipped, so restoring never rewrites text the
    caller wrote."""

    def __init__(self, types: Iterable[str] = PII_TYPES) -> None:
        self._types = tuple(types)
        self._placeholder_of: dict[str, str] = {}
        self._value_of: dict[str, str] = {}
        self._counts: Counter[str] = Counter()
        self._reserved: set[str] = set()
        self.findings: list[Finding] = []

    @property
    def active(self) -> bool:
        return bool(self._value_of)

    @property
    def types_found(self) -> list[str]:
        return found_types(self.findings)

    def redact_all(self, texts: Sequence[str]) -> list[str]:
        """Redact several texts of one call (placeholders already in any of them are reserved first)."""
        for text in texts:
            self._reserved.update(match.group() for match in PLACEHOLDER.finditer(text))
        return [self._redact(text) for text in texts]

    def _redact(self, text: str) -> str:
        findings = detect(text, self._types)
        if not findings:
            return text
        self.findings.extend(findings)
        parts: list[str] = []
        cursor = 0
        for finding in findings:
            parts.append(text[cursor:finding.start])
            parts.append(self._placeholder(finding))
            cursor = finding.end
        parts.append(text[cursor:])
        return "".join(parts)

    def _placeholder(self, finding: Finding) -> str:
        existing = self._placeholder_of.get(finding.value)
        if existing is not None:
            return existing
        label = LABELS[finding.type]
        while True:
            self._counts[label] += 1
            placeholder = f"[{label}_{self._counts[label]}]"
            if placeholder not in self._reserved:
                break
        self._placeholder_of[finding.value] = placeholder
        self._value_of[placeholder] = finding.value
        return placeholder

    def restore(self, text: str) -> str:
        """Put the original values back for every placeholder this call issued."""
        if not self._value_of or "[" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self._value_of.get(m.group(), m.group()), text)

    def restorer(self) -> StreamRestorer:
        return StreamRestorer(self)


class StreamRestorer:
    """Restores placeholders in a stream of text pieces. A piece ending in what may be the start of a
    placeholder (``... [EMA``) keeps that tail back until the next piece completes or refutes it."""

    def __init__(self, redaction: Redaction) -> None:
        self._redaction = redaction
        self._pending = ""

    def feed(self, text: str) -> str:
        buffer = self._pending + text
        tail = _PARTIAL_PLACEHOLDER.search(buffer)
        if tail is not None and len(buffer) - tail.start() < MAX_PLACEHOLDER:
            buffer, self._pending = buffer[:tail.start()], buffer[tail.start():]
        else:
            self._pending = ""
        return self._redaction.restore(buffer)

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return self._redaction.restore(rest)
