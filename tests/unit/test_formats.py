"""Parsing of HTML, PDF, DOCX and CSV uploads into heading-structured text, and their typed errors."""

from __future__ import annotations

import io
import zipfile

import pytest

from atrium.errors import InvalidRequest, PayloadTooLarge
from atrium.knowledge import formats
from atrium.knowledge.chunking import chunk_text, split_sections
from atrium.knowledge.parsing import is_supported, parse_document
from tests.document_files import CSV_TABLE, HTML_PAGE, make_docx, make_pdf


def words(text: str) -> int:
    return len(text.split())


def test_html_drops_boilerplate_and_keeps_headings() -> None:
    parsed = parse_document("guide.html", HTML_PAGE.encode())
    assert parsed.title == "Greenhouse guide" and parsed.is_markdown
    for boilerplate in ("analyticsbeacon", "Shopmenu", "footerfiller", "color: red", "Home"):
        assert boilerplate not in parsed.text
    assert "Tomatoes need warm nights and steady watering." in parsed.text
    sections = split_sections(parsed.text)
    assert [section.headings for section in sections] == [("Greenhouse guide",),
                                                          ("Greenhouse guide", "Ventilation")]
    # A '#' line of the page's own text is not taken for a heading.
    assert "not a heading" in sections[1].body and "keep this line" in sections[1].body


def test_pdf_text_per_page_and_the_page_is_the_chunks_heading() -> None:
    data = make_pdf(["Glaciers retreat every summer.", "", "# Fjords are carved by ice."], title="Ice notes")
    parsed = parse_document("ice.pdf", data)
    assert parsed.title == "Ice notes"
    chunks = chunk_text(parsed.text, words, max_tokens=64, overlap_tokens=8)
    assert [(chunk.heading_path, chunk.text.split("\n\n", 1)[1]) for chunk in chunks] == [
        ("Page 1", "Glaciers retreat every summer."), ("Page 3", "\\# Fjords are carved by ice.")]


def test_pdf_title_falls_back_to_the_file_name() -> None:
    assert parse_document("field report.pdf", make_pdf(["Some text."])).title == "field report"


@pytest.mark.parametrize("data", [b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", b"%PDF-1.7\n" + bytes(range(256)) * 20,
                                  b"not a pdf at all"])
def test_a_corrupt_pdf_is_unreadable(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_document("broken.pdf", data)
    assert caught.value.code == "unreadable_file"


def test_docx_paragraphs_headings_and_tables() -> None:
    data = make_docx("Onboarding", [("h1", "First week"), ("p", "Meet your mentor on Monday."),
                                     ("h2", "Accounts"), ("p", "# Ask IT for a laptop.")],
                     table=[["tool", "owner"], ["wiki", "platform team"]])
    parsed = parse_document("onboarding.docx", data)
    assert parsed.title == "Onboarding"
    sections = split_sections(parsed.text)
    assert sections[0].headings == ("First week",) and sections[0].body == "Meet your mentor on Monday."
    assert sections[1].headings == ("First week", "Accounts")
    assert "\\# Ask IT for a laptop." in sections[1].body and "wiki | platform team" in sections[1].body


def test_a_zip_that_is_not_a_docx_and_a_damaged_docx_are_unreadable() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "hi")
    good = make_docx("T", [("p", "text")])
    for data in (buffer.getvalue(), good[: len(good) // 2], b"plain bytes"):
        with pytest.raises(InvalidRequest) as caught:
            parse_document("x.docx", data)
        assert caught.value.code == "unreadable_file"


def test_a_docx_that_unpacks_to_too_much_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", "<w/>")
        archive.writestr("word/padding.xml", b" " * (formats.MAX_UNZIP_RATIO * 1_000_000 + 1))
    with pytest.raises(InvalidRequest, match="unpacks to too much") as caught:
        parse_document("bomb.docx", buffer.getvalue())
    assert caught.value.code == "unreadable_file"


def test_csv_rows_carry_the_header() -> None:
    parsed = parse_document("cities.csv", CSV_TABLE.encode())
    assert parsed.text.split("\n\n") == ["city: Reykjavik; country: Iceland; population: 139875",
                                         "city: Nuuk; country: Greenland; population: 19872"]
    tsv = parse_document("cities.tsv", b"name\tnote\nOslo\tcapital, of Norway\n")
    assert tsv.text == "name: Oslo; note: capital, of Norway"


def test_csv_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    long_cell = "x" * (formats.MAX_CSV_CELL_CHARS * 3)
    parsed = parse_document("wide.csv", f"a,b\n{long_cell},y\n".encode())
    assert parsed.text == f"a: {'x' * formats.MAX_CSV_CELL_CHARS}; b: y"
    monkeypatch.setattr(formats, "MAX_CSV_ROWS", 3)
    with pytest.raises(PayloadTooLarge):
        parse_document("long.csv", b"n\n" + b"1\n" * 4)


def test_unsupported_types_have_their_code() -> None:
    for name in ("slides.pptx", "archive.zip", "noextension"):
        assert not is_supported(name)
        with pytest.raises(InvalidRequest) as caught:
            parse_document(name, b"whatever")
        assert caught.value.code == "unsupported_file_type"
    assert all(is_supported(name) for name in ("a.html", "a.HTM", "a.pdf", "a.docx", "a.csv", "a.tsv"))


def test_content_must_match_the_suffix() -> None:
    for name, data in (("notes.txt", make_pdf(["text"])), ("page.html", make_docx("T", [("p", "x")]))):
        with pytest.raises(InvalidRequest) as caught:
            parse_document(name, data)
        assert caught.value.code == "unreadable_file"
