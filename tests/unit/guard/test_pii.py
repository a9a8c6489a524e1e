"""PII detection (every type, with the checks that keep random numbers out) and reversible redaction,
streamed restoration included."""

from __future__ import annotations

import pytest

from atrium.guard.pii import Redaction, detect


def found(text: str) -> list[tuple[str, str]]:
    return [(f.type, f.value) for f in detect(text)]


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("write to jane.doe+news@mail.example.co.uk.", "email", "jane.doe+news@mail.example.co.uk"),
    ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
    ("call +14155550132", "phone", "+14155550132"),
    ("call (415) 555-0132 now", "phone", "(415) 555-0132"),
    ("call 415-555-0132 now", "phone", "415-555-0132"),
    ("appelez le 06 12 34 56 78", "phone", "06 12 34 56 78"),
    ("ring 020 7946 0958", "phone", "020 7946 0958"),
    ("card 4111 1111 1111 1111 ok", "card", "4111 1111 1111 1111"),
    ("amex 3782-822463-10005 ok", "card", "3782-822463-10005"),
    ("iban GB82 WEST 1234 5698 7654 32 please", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("iban DE89370400440532013000.", "iban", "DE89370400440532013000"),
    ("ssn 123-45-6789", "national_id", "123-45-6789"),
    ("nino AB 12 34 56 C", "national_id", "AB 12 34 56 C"),
    ("dni 54362315K", "national_id", "54362315K"),
    ("nie X2482300W", "national_id", "X2482300W"),
    ("cf RCCMNL83S18D969H", "national_id", "RCCMNL83S18D969H"),
    ("nir 2 95 10 99 126 111 93", "national_id", "2 95 10 99 126 111 93"),
    ("cpf 390.533.447-05", "national_id", "390.533.447-05"),
    ("aadhaar 2341 2341 2346", "national_id", "2341 2341 2346"),
    ("personnummer 880320-0016", "national_id", "880320-0016"),
    ("hetu 131052-308T", "national_id", "131052-308T"),
    ("ahv 756.1234.5678.97", "national_id", "756.1234.5678.97"),
    ("host 192.168.1.20, ok", "ip", "192.168.1.20"),
    ("host 2001:db8::8a2e:370:7334 ok", "ip", "2001:db8::8a2e:370:7334"),
    ("link-local fe80::1 ok", "ip", "fe80::1"),
    ("key atr_abcdefghijklmnopqrstuvwxyz0123", "secret", "atr_abcdefghijklmnopqrstuvwxyz0123"),
    ("refresh atrr_Qm8xZ2abcdefghijklmnopqrstuv", "secret", "atrr_Qm8xZ2abcdefghijklmnopqrstuv"),
    ("key sk-proj-abcdefABCDEF123456", "secret", "sk-proj-abcdefABCDEF123456"),
    ("aws AKIAIOSFODNN7EXAMPLE", "secret", "AKIAIOSFODNN7EXAMPLE"),
    ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "secret", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "secret", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("config api_key=Zx8f9Qm2Lp4Tn7Vb3Kd", "secret", "Zx8f9Qm2Lp4Tn7Vb3Kd"),
    ('{"token": "q8Zr2LmX9vT4kP1sN7wB"}', "secret", "q8Zr2LmX9vT4kP1sN7wB"),
])
def test_each_type_is_found_with_its_exact_span(text: str, kind: str, value: str) -> None:
    assert found(text) == [(kind, value)]


@pytest.mark.parametrize("text", [
    "In 2023 we sold 1,250,000.00 USD of stock; by 2024-01-15 it was 3.14159 times more.",
    "Version 1.2.3 shipped at 10:30:45 with order 12345 and zip 94103-1234.",
    "Python slices like x[a::b] and C++ std::vector are code, not addresses.",
    "A 16-digit number that fails Luhn: 4111 1111 1111 1112. An id: 1234567890123456.",
    "The key to success is practice: keyboard shortcuts help.",
    "Call me maybe, or +1 500.",
    "SSN-like but invalid: 000-12-3456 and 666-12-3456.",
    "IBAN-like but wrong: GB00 WEST 1234 5698 7654 32.",
])
def test_ordinary_numbers_and_words_are_not_pii(text: str) -> None:
    assert found(text) == []


def test_overlaps_go_to_the_stronger_type() -> None:
    # A card number is also a digit run a phone pattern could take; the card wins and nothing doubles.
    assert found("pay with 4111-1111-1111-1111 today") == [("card", "4111-1111-1111-1111")]


def test_only_the_requested_types_are_looked_for() -> None:
    text = "mail jane@example.com from 10.0.0.7"
    assert [f.type for f in detect(text, types=["ip"])] == ["ip"]


def test_a_value_never_shows_in_a_finding_repr() -> None:
    (finding,) = detect("mail jane@example.com")
    assert "jane" not in repr(finding)


def test_redaction_is_stable_within_a_call_and_restores() -> None:
    redaction = Redaction()
    first, second = redaction.redact_all([
        "Mail jane@example.com or bob@example.org, then jane@example.com again; call +44 20 7946 0958.",
        "Again jane@example.com.",
    ])
    assert first == "Mail [EMAIL_1] or [EMAIL_2], then [EMAIL_1] again; call [PHONE_1]."
    assert second == "Again [EMAIL_1]."
    assert redaction.types_found == ["email", "phone"]
    assert redaction.restore("Reply to [EMAIL_2] and [EMAIL_1], not [EMAIL_9].") == (
        "Reply to bob@example.org and jane@example.com, not [EMAIL_9].")


def test_placeholders_already_in_the_input_are_skipped_and_left_alone() -> None:
    redaction = Redaction()
    (text,) = redaction.redact_all(["Template [EMAIL_1] for jane@example.com"])
    assert text == "Template [EMAIL_1] for [EMAIL_2]"
    assert redaction.restore("[EMAIL_1] / [EMAIL_2]") == "[EMAIL_1] / jane@example.com"


def test_a_new_call_knows_nothing_of_the_last() -> None:
    Redaction().redact_all(["jane@example.com"])
    assert Redaction().restore("[EMAIL_1]") == "[EMAIL_1]"


def test_streamed_placeholders_are_restored_wherever_the_chunks_are_cut() -> None:
    redaction = Redaction()
    redaction.redact_all(["jane@example.com and +44 20 7946 0958"])
    answer = "Write to [EMAIL_1] or call [PHONE_1]; [NOTE] and [EMAIL_99] stay as they are ["
    expected = redaction.restore(answer)
    assert "jane@example.com" in expected and "+44 20 7946 0958" in expected
    for cut in range(len(answer) + 1):
        for second_cut in (cut, min(len(answer), cut + 3), min(len(answer), cut + 7)):
            restorer = redaction.restorer()
            pieces = [answer[:cut], answer[cut:second_cut], answer[second_cut:]]
            out = "".join(restorer.feed(piece) for piece in pieces) + restorer.flush()
            assert out == expected, (cut, second_cut)


def test_the_restorer_releases_text_that_cannot_be_a_placeholder() -> None:
    redaction = Redaction()
    redaction.redact_all(["jane@example.com"])
    restorer = redaction.restorer()
    assert restorer.feed("see [EM") == "see "
    assert restorer.feed("AIL_1] now [x") == "jane@example.com now [x"
    assert restorer.flush() == ""
