"""`python -m sagaline_tools.cli`: the same as the `sagaline` console script."""

from sagaline_tools.cli import main

main()
