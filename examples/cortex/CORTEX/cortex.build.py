"""Build the cortex index of ``docs/``: run from the example's root as ``python CORTEX/cortex.build.py``."""

import sys

# Importing the shared code must not leave CORTEX/__pycache__/ behind: the build writes only what it
# declares (its two outputs), and its scratch files only inside the catalytic domain.
sys.dont_write_bytecode = True

import cortex_lib  # noqa: E402  (must come after the bytecode switch above)


def main() -> int:
    """Build the index and print the one-line summary."""
    print(cortex_lib.build().line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
