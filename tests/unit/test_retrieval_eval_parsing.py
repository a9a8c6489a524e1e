"""The reST parsing behind the FAQ retrieval eval set (bench/retrieval_eval/build_dataset.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "retrieval_eval" / "build_dataset.py"


def _load():
    spec = importlib.util.spec_from_file_location("retrieval_eval_build_dataset", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bd = _load()

FAQ = """\
=========================
FAQ: Databases and models
=========================

.. _faq-see-raw-sql-queries:

How can I see the raw SQL queries Django is running?
====================================================

If you are using :doc:`multiple databases</topics/db/multi-db>`, you can use the
same interface. See also :ref:`the FAQ <faq-see-raw-sql-queries>`.

Can I use Django with a preexisting database?
---------------------------------------------

Yes. See :doc:`Integrating with a legacy
database </howto/legacy-databases>` and :doc:`install`.

Some objects aren't appearing in the admin.
-------------------------------------------

See :doc:`/ref/contrib/admin/index`.

How do I make a variable available to all my templates?
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

Use :ref:`subclassing-context-requestcontext`; see :class:`~django.template.RequestContext`.

Is Django stable?
=================

Yes, see the `release notes <https://example.com>`_.

    Indented text with a question?
    ------------------------------
"""


def test_headings_with_and_without_overline():
    titles = [h.title for h in bd.find_headings(FAQ)]
    assert titles == [
        "FAQ: Databases and models",
        "How can I see the raw SQL queries Django is running?",
        "Can I use Django with a preexisting database?",
        "Some objects aren't appearing in the admin.",
        "How do I make a variable available to all my templates?",
        "Is Django stable?",
    ]


def test_underline_shorter_than_title_is_not_a_heading():
    assert bd.find_headings("A long enough title?\n=====\n\ntext\n") == []


def test_transition_after_blank_line_is_not_a_heading():
    assert bd.find_headings("Para one.\n\n----------\n\nPara two.\n") == []


def test_inset_title_under_overline():
    text = "============================\n Frequently Asked Questions\n============================\n"
    assert [h.title for h in bd.find_headings(text)] == ["Frequently Asked Questions"]


def test_sections_end_at_the_next_heading_of_any_level():
    sections = {s.title: s.body for s in bd.split_sections(FAQ)}
    body = sections["How can I see the raw SQL queries Django is running?"]
    assert "multiple databases" in body
    assert "preexisting" not in body
    assert "legacy" in sections["Can I use Django with a preexisting database?"]


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("How can I see the raw SQL queries Django is running?", True),
        ("How do I do X? Why doesn't Y work? Where can I go to get help?", True),
        ("Why do I get an error about importing :envvar:`DJANGO_SETTINGS_MODULE`?", True),
        ("Some objects aren't appearing in the admin.", False),
        ("Problems running ``django-admin``", False),
    ],
)
def test_is_question(title, expected):
    assert bd.is_question(title) is expected


def test_clean_inline_keeps_displayed_text():
    assert (
        bd.clean_inline("Why do I get an error about importing :envvar:`DJANGO_SETTINGS_MODULE`?")
        == "Why do I get an error about importing DJANGO_SETTINGS_MODULE?"
    )
    assert bd.clean_inline("I'm getting a ``UnicodeDecodeError``. What?") == "I'm getting a UnicodeDecodeError. What?"
    assert bd.clean_inline("See :doc:`the guide </intro/install>` now") == "See the guide now"
    assert bd.clean_inline("Isn't using `pickle` a security concern?") == "Isn't using pickle a security concern?"


def test_extract_links_explicit_bare_and_multiline_forms():
    sections = {s.title: s.body for s in bd.split_sections(FAQ)}
    links = bd.extract_links(sections["Can I use Django with a preexisting database?"])
    assert links == [bd.Link("doc", "/howto/legacy-databases"), bd.Link("doc", "install")]
    links = bd.extract_links(sections["How do I make a variable available to all my templates?"])
    assert links == [bd.Link("ref", "subclassing-context-requestcontext")]  # :class: is not followed


def test_extract_links_without_space_before_target():
    assert bd.extract_links(":doc:`multiple databases</topics/db/multi-db>`") == [bd.Link("doc", "/topics/db/multi-db")]


@pytest.mark.parametrize(
    ("target", "current", "expected"),
    [
        ("/topics/db/models", "faq/models.txt", "topics/db/models.txt"),
        ("install", "faq/models.txt", "faq/install.txt"),
        ("../intro/install", "faq/models.txt", "intro/install.txt"),
        ("/index", "faq/general.txt", "index.txt"),
        ("userguide/tasks", "faq.txt", "userguide/tasks.txt"),
        ("/topics/db/models.txt", "faq/models.txt", "topics/db/models.txt"),
    ],
)
def test_resolve_doc(target, current, expected):
    assert bd.resolve_doc(target, current) == expected


def test_resolve_doc_uses_the_source_suffix():
    assert bd.resolve_doc("/core/engines", "faq/connections.rst", ".rst") == "core/engines.rst"


def test_find_labels_skips_hyperlink_targets():
    text = """\
.. _subclassing-context-requestcontext:

.. _`Quoted Label`:

.. _the wiki page: https://code.djangoproject.com/wiki/NoSqlSupport

.. _`Queue everything`:
    https://example.com/queue

.. __: https://example.com/anonymous

Title
=====
"""
    assert bd.find_labels(text) == ["subclassing-context-requestcontext", "quoted label"]


def test_label_index_and_ref_resolution():
    docs = {
        "ref/templates/api.txt": ".. _subclassing-context-RequestContext:\n\nTitle\n=====\n",
        "faq/models.txt": ".. _faq-see-raw-sql-queries:\n\nQ?\n==\n",
        "zz/dup.txt": ".. _subclassing-context-requestcontext:\n",
    }
    labels = bd.build_label_index(docs)
    # Case-insensitive; on a duplicate the first path in sorted order wins.
    assert labels["subclassing-context-requestcontext"] == "ref/templates/api.txt"
    link = bd.Link("ref", "Subclassing-Context-RequestContext")
    assert bd.resolve_link(link, "faq/usage.txt", labels) == "ref/templates/api.txt"
    assert bd.resolve_link(bd.Link("ref", "no-such-label"), "faq/usage.txt", labels) is None


def test_build_questions_keeps_only_questions_with_gold_outside_the_faq():
    docs = {
        "faq/models.txt": FAQ,
        "faq/install.txt": "Install\n=======\n",
        "topics/db/multi-db.txt": "Multiple databases\n==================\n",
        "howto/legacy-databases.txt": "Legacy\n======\n",
        "ref/contrib/admin/index.txt": "Admin\n=====\n",
        "ref/templates/api.txt": ".. _subclassing-context-requestcontext:\n\nAPI\n===\n",
        "releases/5.0.txt": ".. _release-label:\n",
    }
    questions, stats = bd.build_questions(docs)
    assert [(q["question"], q["gold"]) for q in questions] == [
        # The :ref: back into the FAQ itself is not gold.
        ("How can I see the raw SQL queries Django is running?", ["topics/db/multi-db.txt"]),
        # :doc:`install` resolves to faq/install.txt, which is not in the corpus.
        ("Can I use Django with a preexisting database?", ["howto/legacy-databases.txt"]),
        ("How do I make a variable available to all my templates?", ["ref/templates/api.txt"]),
    ]
    assert [q["id"] for q in questions] == ["django-models-01", "django-models-02", "django-models-03"]
    assert all(q["faq_file"] == "faq/models.txt" for q in questions)
    # "Is Django stable?" links only to an external site.
    assert stats["question_headings"] == 4
    assert stats["skipped_no_gold"] == 1


def test_corpus_excludes_faq_release_notes_and_sphinx_internals():
    source = bd.DJANGO
    assert source.is_corpus("topics/db/models.txt")
    assert source.is_corpus("index.txt")
    assert not source.is_corpus("faq/models.txt")
    assert not source.is_corpus("releases/5.2.txt")
    assert not source.is_corpus("requirements.txt")
    assert not source.is_corpus("_theme/djangodocs/static/fontawesome/LICENSE.txt")
    assert not source.is_corpus("topics/db/models.rst")


def test_label_inside_a_directive_is_found_but_a_margin_definition_wins():
    text = ".. warning::\n\n   .. _json-with-large-data:\n\n   JSON is not a good fit.\n"
    assert bd.find_labels(text) == ["json-with-large-data"]
    docs = {"a/example.txt": "::\n\n    .. _shared:\n\n    Title\n", "b/real.txt": ".. _shared:\n\nTitle\n=====\n"}
    assert bd.build_label_index(docs)["shared"] == "b/real.txt"


DEFLIST_FAQ = """\
FAQ
===

How do I...
-----------

... create PDF files?
   See :doc:`/usage/pdf`.

.. _faq-x:
.. cssclass:: faq

Why does `!cursor.execute()` fail?
    Read :ref:`adapt`.

Q
  My program never starts.  Why?

A
  See :ref:`adapt`.

Plain term
    Not a question: :doc:`/usage/pdf`.
"""


def test_definition_list_questions_with_ellipsis_prefix_and_q_a_pairs():
    source = bd.Source("demo", "1", "x", docs_dir="doc", suffix=".rst", faq=("faq.rst",), deflist=True)
    docs = {"faq.rst": DEFLIST_FAQ, "usage/pdf.rst": "PDF\n===\n",
            "usage/adapt.rst": ".. _adapt:\n\nAdapt\n=====\n"}
    questions, _stats = bd.build_questions(docs, source)
    assert [(q["question"], q["gold"]) for q in questions] == [
        ("How do I create PDF files?", ["usage/pdf.rst"]),
        ("Why does cursor.execute() fail?", ["usage/adapt.rst"]),
        ("My program never starts. Why?", ["usage/adapt.rst"]),
    ]
    # Without deflist, the same page has no question headings.
    plain = bd.Source("demo", "1", "x", docs_dir="doc", suffix=".rst", faq=("faq.rst",))
    assert bd.build_questions(docs, plain)[0] == []


HTML_FAQ = """\
FAQ
===

What is reStructuredText?
-------------------------

See the `primer`_, the `spec <docs/ref/rst.html#top>`_ and `this`__.

__ docs/user/links.html

.. _primer: docs/user/rst/quickstart.html

Where is it hosted?
-------------------

At the `home page`_ (external).

.. _home page: https://example.com/index.html
"""


def test_html_links_resolve_named_embedded_and_anonymous_targets():
    source = bd.Source("demo", "1", "x", docs_dir="", suffix=".rst", faq=("FAQ.rst",), included=("docs/",),
                       html_links=True)
    docs = {"FAQ.rst": HTML_FAQ, "docs/user/rst/quickstart.rst": "", "docs/ref/rst.rst": "",
            "docs/user/links.rst": "", "README.rst": ""}
    questions, stats = bd.build_questions(docs, source)
    assert [(q["question"], q["gold"]) for q in questions] == [
        ("What is reStructuredText?", ["docs/ref/rst.rst", "docs/user/links.rst", "docs/user/rst/quickstart.rst"]),
    ]
    assert stats["skipped_no_gold"] == 1
    assert not source.is_corpus("README.rst")


def test_object_roles_resolve_to_the_one_page_defining_the_object():
    faq = ("FAQ\n===\n\nHow do I set the timeout?\n-------------------------\n\n"
           "Use :setting:`TIMEOUT` or :class:`~pkg.Client`; :func:`len` is Python's.\n\n"
           "Where is helper?\n----------------\n\nSee :func:`helper`.\n")
    docs = {
        "faq.rst": faq,
        "settings.rst": ".. setting:: TIMEOUT\n\nTIMEOUT\n-------\n",
        "client.rst": ".. module:: pkg\n\n.. class:: Client(url)\n",
        "a.rst": ".. function:: helper()\n",
        "b.rst": ".. function:: helper()\n",  # defined twice: ambiguous, not gold
    }
    source = bd.Source("demo", "1", "x", docs_dir="doc", suffix=".rst", faq=("faq.rst",))
    questions, stats = bd.build_questions(docs, source)
    assert [(q["question"], q["gold"]) for q in questions] == [
        ("How do I set the timeout?", ["client.rst", "settings.rst"]),
    ]
    assert stats["skipped_no_gold"] == 1


def test_sample_corpus_keeps_gold_and_a_fixed_bounded_sample_of_the_rest():
    paths = [f"p{i}.rst" for i in range(50)]
    sizes = dict.fromkeys(paths, 100)
    sample = bd.sample_corpus(paths, {"p7.rst", "p30.rst"}, sizes, 1000)
    assert {"p7.rst", "p30.rst"} <= set(sample)
    assert len(sample) == 2 + 10
    assert sample == bd.sample_corpus(paths, {"p7.rst", "p30.rst"}, sizes, 1000)
    assert bd.sample_corpus(paths, set(), sizes, None) == paths
