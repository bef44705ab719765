"""A cortex build that breaks its contract on purpose: it leaves one scratch file behind.

Same build as ``cortex.build.py``, except that ``CORTEX/_generated/_tmp/index_temp_001.json`` is not
cleaned up. Run under ``catalytic run`` it shows what a dirty run looks like: exit code 4 and a
``RESTORE_DIFF.json`` naming the leftover file.
"""

import sys

# See cortex.build.py: no CORTEX/__pycache__/ from importing the shared code.
sys.dont_write_bytecode = True

import cortex_lib  # noqa: E402  (must come after the bytecode switch above)


def main() -> int:
    """Build the index, forgetting one scratch file, and print the one-line summary."""
    print(cortex_lib.build(leak=True).line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
