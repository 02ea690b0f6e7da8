"""``python -m infra.cli`` runs the ``aiorch`` command line."""

from infra.cli import main

main()
