"""`python -m allo`: the same as the `allo` command."""

from allo.cli import main

main()
