"""Build the retrieval eval set from a project's own documentation and FAQ.

Questions are the question headings of the FAQ pages shipped in a project's source package (Django's
``docs/faq/*.txt`` by default), written by that project, not by us. The gold documents of a question are
the pages its FAQ answer links to with ``:doc:`` and ``:ref:`` roles. The corpus is the rest of the
documentation: everything except the FAQ itself (its answers must not be retrievable verbatim) and the
release notes (size), so a system scores only by finding the page the project's authors pointed to.

Besides ``:doc:`` and ``:ref:``, gold pages come from object roles (``:setting:``, ``:class:``... resolved to
the one page defining the object with a directive) and, per source, from relative ``.html`` hyperlinks
(Docutils); questions also from question definition-list terms and ``Q``/``A`` pairs (psycopg2, Sphinx,
Pygments, Supervisor). A corpus is every gold page plus a fixed sample of the other pages of at most
``--max-corpus-kb`` (150 KB by default; 0 = every page), so that all 17 projects ingest in minutes.

Usage::

    python bench/retrieval_eval/build_dataset.py                       # Django -> <cache>/django/
    python bench/retrieval_eval/build_dataset.py --sources all         # all 17 projects (150 questions)

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
    # Only pages under these prefixes are corpus (docs_dir "" = the sdist's top directory, e.g. docutils).
    included: tuple[str, ...] = ("",)
    # Questions also from definition-list terms ending in "?" (psycopg2: "Why does ...?" + indented answer).
    deflist: bool = False
    # Gold also from named hyperlinks (`text`_) whose target is a relative .html page (docutils' FAQ).
    html_links: bool = False
    # Gold also from object roles (:class:, :func:, :setting:, :confval: ...) resolved to the one page
    # that defines the object with a directive (``.. class:: Name``, ``.. setting:: NAME``).
    object_links: bool = True

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
            and path.startswith(self.included)
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
        # Added with issue 14 (a bigger dev set): every FAQ found in a PyPI sdist whose answers link into
        # the project's own docs.
        Source("docutils", "0.23.1", "8a83ac8810e41228b6f20e96a183abd2460a1757f78e2603e3d4b31fe7d29622",
               docs_dir="", suffix=".rst", faq=("FAQ.rst",), included=("docs/",), html_links=True),
        Source("psycopg2", "2.9.13", "d36784fc2dae69523ba4b79c7d1d1b4d6e83e87836874f111262f4db940b16a6",
               docs_dir="doc/src", suffix=".rst", faq=("faq.rst",), excluded=("news",), deflist=True),
        Source("beets", "2.14.1", "b25dc7bf8ed093d8b6e043e88013736902c1082c958b81a598af5db5275539a5",
               docs_dir="docs", suffix=".rst", faq=("faq.rst",), excluded=("changelog.rst",)),
        Source("cython", "3.3.1", "e0e45989e821bef6aa9ae15c7d583ab5e055f7406c4b3624e49e06d24e90375a",
               docs_dir="docs", suffix=".rst", faq=("src/userguide/faq.rst",), excluded=("CHANGES",)),
        Source("coverage", "7.18.0", "dd7258fab7dbc3bedcc94d6e9d4431408e390f080687b3463dbee3147715867f",
               docs_dir="doc", suffix=".rst", faq=("faq.rst",), excluded=("changes.rst",)),
        Source("pylint", "4.1.5", "e6f1b42eefe7ac926ea0eb50f9528466610e6d77144a3e32357b992aa1adc6d5",
               docs_dir="doc", suffix=".rst", faq=("faq.rst",), excluded=("whatsnew/", "data/")),
        Source("numba", "0.68.1", "9de461812470173a14eeb7e0bbd27c897dffe835402a33861166842fc5f6ea57",
               docs_dir="docs/source", suffix=".rst", faq=("user/faq.rst",),
               excluded=("release/", "release-notes")),
        Source("sphinx", "8.2.3", "398ad29dee7f63a75888314e9424d40f52ce5a6a87ae88e7071e80af296ec348",
               docs_dir="doc", suffix=".rst", faq=("faq.rst",), excluded=("changes/",), deflist=True),
        Source("astropy", "8.0.2", "e6af35823099ad6a40b57dbe5ff845f577374ea131925c9fa4b49eeab06c5310",
               docs_dir="docs", suffix=".rst", faq=("io/fits/appendix/faq.rst",), excluded=("changes",)),
        Source("mypy", "2.4.1", "63b590965691e540a335fa74dadf31a7069142f6b72e234689bbd244edf55623",
               docs_dir="docs/source", suffix=".rst", faq=("faq.rst",), excluded=("changelog",)),
        Source("pygments", "2.21.0", "610ca751c9bc2492b38eb9a38a7fbc93edbbb2d7182edaf34e66ae493dee5c8c",
               docs_dir="doc", suffix=".rst", faq=("faq.rst",), deflist=True),
        Source("supervisor", "4.3.0", "4a2bf149adf42997e1bb44b70c43b613275ec9852c3edacca86a9166b27e945e",
               docs_dir="docs", suffix=".rst", faq=("faq.rst",), deflist=True),
        Source("tornado", "6.6.1", "28e6311402af59c8b02e3fa0f5e7d8eb465b25081381803b127d97e6a4395d5a",
               docs_dir="docs", suffix=".rst", faq=("faq.rst",), excluded=("releases",)),
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


def split_definitions(text: str) -> list[Section]:
    """Definition-list items of a reST fragment: a term at the margin with an indented body under it.

    A ``Q`` item followed by an ``A`` item (Supervisor's FAQ) becomes one item whose title is the Q's body
    and whose body is the A's. Directives, comments and headings are not terms.
    """
    lines = text.splitlines()
    headings = {h.line for h in find_headings(text)} | {h.line + 1 for h in find_headings(text)}
    items: list[Section] = []
    i = 0
    while i < len(lines) - 1:
        term, following = lines[i], lines[i + 1]
        if (
            term.strip()
            and not term[:1].isspace()
            and not re.match(r"\.\.(\s|$)", term)
            and i not in headings
            and following.strip()
            and following[:1].isspace()
        ):
            body = []
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or lines[j][:1].isspace()):
                body.append(lines[j])
                j += 1
            items.append(Section(title=term.strip(), body="\n".join(body)))
            i = j
            continue
        i += 1
    merged: list[Section] = []
    n = 0
    while n < len(items):
        item = items[n]
        if item.title == "Q" and n + 1 < len(items) and items[n + 1].title == "A":
            merged.append(Section(title=" ".join(item.body.split()), body=items[n + 1].body))
            n += 2
            continue
        merged.append(item)
        n += 1
    return merged


_HYPERLINK_REF_RE = re.compile(r"`(?P<text>[^`]+)`_(?!_)")
_HYPERLINK_TARGET_RE = re.compile(r"^\.\. _(?:`(?P<quoted>[^`]+)`|(?P<plain>[^:`]+)):[ \t]*(?P<url>\S*)[ \t]*$")


def hyperlink_targets(text: str) -> dict[str, str]:
    """Named hyperlink targets of a document (``.. _name: url``, the URL maybe on the next indented line)."""
    lines = text.splitlines()
    targets: dict[str, str] = {}
    for i, line in enumerate(lines):
        match = _HYPERLINK_TARGET_RE.match(line)
        if match is None:
            continue
        url = match.group("url")
        if not url and i + 1 < len(lines) and lines[i + 1][:1].isspace():
            url = lines[i + 1].strip()
        if url:
            targets[normalize_label(match.group("quoted") or match.group("plain"))] = url
    return targets


_ANONYMOUS_TARGET_RE = re.compile(r"^(?:\.\. __:|__)[ \t]+(?P<url>\S+)[ \t]*$", re.MULTILINE)


def html_link_pages(body: str, targets: dict[str, str], current: str, suffix: str) -> list[str]:
    """Pages that hyperlinks of ``body`` point to when their target is a relative ``.html`` file: named
    references (``text`_``) through ``targets``, anonymous ones (``text`__``) through the anonymous targets
    (``__ url``) of the same body, in order."""
    urls = []
    for match in _HYPERLINK_REF_RE.finditer(body):
        content = " ".join(match.group("text").split())
        explicit = _EXPLICIT_TARGET_RE.match(content)
        urls.append(explicit.group("target").strip() if explicit else targets.get(normalize_label(content), ""))
    urls += [match.group("url") for match in _ANONYMOUS_TARGET_RE.finditer(body)]
    pages = []
    for url in urls:
        url = url.split("#", 1)[0]
        if not url.endswith(".html") or "://" in url or url.startswith("/"):
            continue
        path = posixpath.normpath(posixpath.join(posixpath.dirname(current), url.removesuffix(".html")))
        pages.append(path + suffix)
    return pages


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
    text = _INTERPRETED_RE.sub(lambda m: _EXPLICIT_TARGET_RE.sub(r"\g<text>", m.group(1)).lstrip("~!"), text)
    text = text.replace("\\ ", "").replace("\\", "")  # reST escapes ("decimal\/\ numeric")
    return " ".join(text.split())


def is_question(title: str) -> bool:
    """FAQ headings that ask something; a stated problem ("Some objects aren't appearing...") does not."""
    return "?" in clean_inline(title)


def extract_links(body: str, roles: set[str] | frozenset[str] = frozenset({"doc", "ref"})) -> list[Link]:
    """Targets of ``roles`` (``:doc:`` and ``:ref:`` by default) in a reST fragment, in order; a role may
    span lines; a domain prefix (``:py:class:``) is ignored."""
    links = []
    for match in _ROLE_RE.finditer(body):
        role = match.group("role")
        if role.split(":")[-1] not in roles:
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


_ELLIPSES = ("…", "...")


def _faq_entries(text: str, deflist: bool, stats: dict[str, int]) -> list[tuple[str, str]]:
    """(question, answer body) of an FAQ page: its question headings and, with ``deflist``, its question
    definition-list terms. A question starting with an ellipsis ("…rename my files?") continues the last
    heading ending with one ("How do I…"), as the page displays it."""
    entries: list[tuple[str, str]] = []
    prefix = ""
    for section in split_sections(text):
        stats["headings"] += 1
        title = clean_inline(section.title)
        if not is_question(section.title):
            prefix = title.rstrip("….").strip() if title.endswith(_ELLIPSES) else ""
            candidates = split_definitions(section.body) if deflist else []
        else:
            candidates = [Section(title=section.title, body=section.body)]
        for entry in candidates:
            question = clean_inline(entry.title)
            if not is_question(entry.title):
                continue
            stats["question_headings"] += 1
            if question.startswith(_ELLIPSES) and prefix:
                question = f"{prefix} {question.lstrip('….').strip()}"
            entries.append((question, entry.body))
    return entries


_OBJECT_ROLES = {"class", "func", "meth", "attr", "exc", "data", "mod", "setting", "confval", "envvar",
                 "option", "obj", "decorator", "program", "signal", "djadmin", "ttag", "tfilter", "lookup"}
_OBJECT_DIRECTIVE_RE = re.compile(
    r"^\s*\.\. (?:py:|std:|c:)?(?P<kind>class|function|method|attribute|exception|data|module|setting|"
    r"confval|envvar|option|decorator|program|signal|django-admin|templatetag|templatefilter|fieldlookup|"
    r"currentmodule|classmethod|staticmethod)::[ \t]+(?P<name>[^\s(]+)", re.MULTILINE)


def build_object_index(docs: dict[str, str], source: Source) -> dict[str, set[str]]:
    """Object name (full dotted name and each dotted tail) -> corpus pages defining it with a directive.
    Names inside a ``.. module::``/``currentmodule`` get that module's prefix too."""
    index: dict[str, set[str]] = {}
    for path, text in docs.items():
        if not source.is_corpus(path):
            continue
        module = ""
        for match in _OBJECT_DIRECTIVE_RE.finditer(text):
            kind, name = match.group("kind"), match.group("name").strip().rstrip(":")
            if kind in ("module", "currentmodule"):
                module = "" if name == "None" else name
                if kind == "currentmodule":
                    continue
            full = name if kind in ("module",) or not module or name.startswith(module) else f"{module}.{name}"
            parts = full.split(".")
            for n in range(len(parts)):
                index.setdefault(".".join(parts[n:]).lower(), set()).add(path)
    return index


def resolve_object(role: str, target: str, objects: dict[str, set[str]]) -> str | None:
    """The one page defining ``target`` (an object role's target), or None when none or several do."""
    name = target.strip().lstrip("~!").removesuffix("()").lower()
    pages = objects.get(name, set())
    return next(iter(pages)) if len(pages) == 1 else None


def build_questions(docs: dict[str, str], source: Source = DJANGO) -> tuple[list[dict], dict[str, int]]:
    """Questions from the FAQ pages of ``docs`` (path relative to the docs root -> text), with gold pages.

    Gold pages are the link targets that are in the corpus; a question whose answer links to nothing in
    the corpus (only to FAQ entries, release notes, external sites, or nothing) is skipped.
    """
    labels = build_label_index(docs)
    objects = build_object_index(docs, source) if source.object_links else {}
    stats = {"headings": 0, "question_headings": 0, "skipped_no_gold": 0, "unresolved_links": 0}
    questions: list[dict] = []
    for faq_file in sorted(p for p in docs if source.is_faq(p)):
        stem = posixpath.splitext(posixpath.basename(faq_file))[0]
        kept_in_file = 0
        targets = hyperlink_targets(docs[faq_file]) if source.html_links else {}
        for title, body in _faq_entries(docs[faq_file], source.deflist, stats):
            gold: list[str] = []
            resolved_links = [resolve_link(link, faq_file, labels, source.suffix) for link in extract_links(body)]
            if source.html_links:
                resolved_links += html_link_pages(body, targets, faq_file, source.suffix)
            if source.object_links:
                resolved_links += [resolve_object(link.role.split(":")[-1], link.target, objects)
                                   for link in extract_links(body, _OBJECT_ROLES)]
            for resolved in resolved_links:
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
                    "question": title,
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
            prefix = source.docs_dir + "/" if source.docs_dir else ""
            if not (member.isfile() and rest.startswith(prefix)):
                continue
            rel = rest[len(prefix) :]
            if not rel.endswith(source.suffix) or posixpath.normpath(rel) != rel or rel.startswith("/"):
                continue  # never write outside the corpus dir
            extracted = tar.extractfile(member)
            assert extracted is not None
            docs[rel] = extracted.read().decode("utf-8", errors="replace")
    return docs


def sample_corpus(paths: list[str], gold: set[str], sizes: dict[str, int], budget: int | None) -> list[str]:
    """Every gold page, then distractors in a fixed pseudo-random order (by the sha256 of their path) while
    they stay within ``budget`` bytes together (``None``: every page)."""
    if budget is None:
        return paths
    kept = [p for p in paths if p in gold]
    total = 0
    for path in sorted((p for p in paths if p not in gold), key=lambda p: hashlib.sha256(p.encode()).hexdigest()):
        if total + sizes[path] <= budget:
            kept.append(path)
            total += sizes[path]
    return sorted(kept)


DEFAULT_MAX_CORPUS_BYTES = 150_000


def build(source: Source, cache_dir: Path,
          max_corpus_bytes: int | None = DEFAULT_MAX_CORPUS_BYTES) -> tuple[Path, dict]:
    """Download, parse and write the dataset of one project; returns its directory and manifest.

    ``max_corpus_bytes`` bounds the distractors (the corpus is every gold page plus a fixed sample of the
    other pages of at most that size, see ``sample_corpus``) so that 17 projects ingest in minutes; ``None``
    keeps every page."""
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
    all_paths = sorted(p for p in docs if source.is_corpus(p))
    gold_paths = {g for q in questions for g in q["gold"]}
    sizes = {p: len(docs[p].encode("utf-8")) for p in all_paths}
    paths = sample_corpus(all_paths, {p for p in all_paths if source.corpus_path(p) in gold_paths}, sizes,
                          max_corpus_bytes)
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
        "docs_files": len(all_paths),
        "docs_bytes": sum(sizes.values()),
        "max_corpus_bytes": max_corpus_bytes,
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
    parser.add_argument("--max-corpus-kb", type=int, default=DEFAULT_MAX_CORPUS_BYTES // 1000,
                        help="per project: every gold page + a fixed sample of the other pages of at most this size "
                             "(0: all pages)")
    args = parser.parse_args(argv)
    try:
        sources = parse_sources(args.sources)
    except ValueError as exc:
        parser.error(str(exc))
    for source in sources:
        out_dir, m = build(source, args.cache_dir.resolve(), args.max_corpus_kb * 1000 or None)
        print(
            f"{source.name}: {m['questions']} questions kept of {m['question_headings']} question headings "
            f"({m['headings']} headings in {m['faq_files']} FAQ files; {m['skipped_no_gold']} skipped "
            f"without a link into the corpus; {m['unresolved_links']} links unresolved); "
            f"{m['gold_per_question_mean']} gold pages per question ({m['distinct_gold_docs']} distinct); "
            f"corpus {m['corpus_files']} of {m['docs_files']} files, {m['corpus_bytes'] / 1e6:.2f} of "
            f"{m['docs_bytes'] / 1e6:.2f} MB -> {out_dir}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
