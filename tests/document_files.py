"""Small real files of each parsed type, built in the test (a PDF written by hand, a DOCX by python-docx)."""

from __future__ import annotations

import io

import docx


def _pdf_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A valid PDF with one page per item of ``pages``, each line drawn in Helvetica (the xref is exact)."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        lines = "".join(f"({_pdf_string(line)}) Tj 0 -16 Td " for line in text.split("\n"))
        stream = f"BT /F1 12 Tf 72 720 Td {lines}ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> "
                       f">> /Contents {page_ids[i] + 1} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = None
    if title is not None:
        objects.append(f"<< /Title ({_pdf_string(title)}) >>".encode())
        info = len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R" + (f" /Info {info} 0 R" if info else "") + " >>"
    out += b"trailer\n" + trailer.encode() + b"\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def make_docx(title: str, blocks: list[tuple[str, str]], table: list[list[str]] | None = None) -> bytes:
    """A DOCX: ``blocks`` are ``("h1".."h3" | "p", text)``; ``table`` rows are added after them."""
    document = docx.Document()
    document.core_properties.title = title
    for kind, text in blocks:
        if kind == "p":
            document.add_paragraph(text)
        else:
            document.add_heading(text, level=int(kind[1]))
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                grid.cell(r, c).text = cell
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


HTML_PAGE = """<!doctype html><html><head><title>Greenhouse guide</title><style>p { color: red }</style>
<script>var tracker = "analyticsbeacon";</script></head>
<body><header><nav><a href="/">Home</a> <a href="/shop">Shopmenu</a></nav></header>
<main><h1>Greenhouse guide</h1><p>Tomatoes need <b>warm</b> nights and steady watering.</p>
<h2>Ventilation</h2><p>Open the roof vents when the air passes twenty-five degrees.</p>
<pre># not a heading
keep this line</pre></main>
<footer>Copyright footerfiller 2026</footer></body></html>
"""

CSV_TABLE = "city,country,population\nReykjavik,Iceland,139875\nNuuk,Greenland,19872\n"
