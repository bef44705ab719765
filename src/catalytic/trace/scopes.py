"""What a write trace watches: the catalytic domains, or the whole workspace but the runs root."""

from __future__ import annotations

from typing import Literal

ScopeName = Literal["domains", "workspace"]
SCOPES: tuple[ScopeName, ...] = ("domains", "workspace")
