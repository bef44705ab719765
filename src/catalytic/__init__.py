"""catalytic: run any command and prove what it did to the filesystem (CMP-01 run ledgers)."""

from __future__ import annotations

__version__ = "1.0.0"
