"""`python -m sagaline.cli`: the same as the `sagaline` console script."""

from sagaline.cli import main

main()
