"""``python -m catalytic``: the same entry point as the ``catalytic`` console script."""

from catalytic.cli import exit_process, main

exit_process(main())
