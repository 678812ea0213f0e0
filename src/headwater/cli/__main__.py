"""``python -m headwater.cli``: the ``headwater`` command."""

from headwater.cli import main

main()
