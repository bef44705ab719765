"""``python -m catalytic``: the same entry point as the ``catalytic`` console script."""

from catalytic.cli import console

console()
