"""`python -m flows.cli`: the `mmfm` command."""

from flows.cli import main

main()
