"""``python -m infra`` runs the ``aiorch`` command line."""

from infra.cli import main

main()
