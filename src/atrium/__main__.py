"""``python -m atrium``: the ``atrium`` command."""

from atrium.cli import main

main()
