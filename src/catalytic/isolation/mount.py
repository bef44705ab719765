"""Whether an overlay can be mounted here, and how: the probe the choice of isolation makes (``auto``,
``overlay``) and the mount options and ``unshare`` argv the overlay backend uses. Apart from the backend so
that choosing an isolation mode never imports the backend (or the declaration it works on)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from catalytic import paths
from catalytic.isolation.restore import remove_tree

_BAD_CHARS = (",", ":", "\\", "\n")
probe_cache: dict[str, str | None] = {}


def rootless() -> bool:
    return bool(os.geteuid() != 0)


def xattr_prefix() -> str:
    return "user.overlay." if rootless() else "trusted.overlay."


def mount_options(lower: Path, upper: Path, work: Path) -> str:
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if rootless():
        return opts + ",userxattr"
    return opts + ",redirect_dir=off,metacopy=off,index=off"


def unshare_argv() -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    argv = [unshare, "--mount", "--propagation", "private"]
    if rootless():
        argv.insert(1, "--map-root-user")
    return argv


def unavailable_reason(root: Path) -> str | None:
    """None when an overlay over ``root`` can be mounted here, else why not (one line)."""
    key = f"{root}:{getattr(os, 'geteuid', lambda: -1)()}"
    if key not in probe_cache:
        probe_cache[key] = _probe(root)
    return probe_cache[key]


def _probe(root: Path) -> str | None:
    if not sys.platform.startswith("linux"):
        return f"overlayfs is Linux-only (this is {sys.platform})"
    if shutil.which("unshare") is None:
        return "the util-linux 'unshare' program is not installed"
    bad = [c for c in _BAD_CHARS if c in str(root)]
    if bad:
        return (
            f"the workspace root {str(root)!r} contains {bad[0]!r}, which overlay mount options cannot carry"
        )
    with tempfile.TemporaryDirectory(prefix="catalytic-probe-") as tmp:
        base = Path(tmp)
        if paths.is_within(str(base), str(root)) or str(base).startswith(str(root) + "/"):
            return f"the temporary directory {tmp} is inside the workspace root"
        for name in ("upper", "work", "mnt"):
            (base / name).mkdir()
        opts = mount_options(root, base / "upper", base / "work")
        cmd = [*unshare_argv(), "--", "mount", "-t", "overlay", "overlay", "-o", opts, str(base / "mnt")]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot start unshare: {exc}"
        with contextlib.suppress(OSError):
            remove_tree(base / "work")
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            msg = detail[-1] if detail else f"exit {proc.returncode}"
            if rootless() and "unshare" in msg:
                return f"unprivileged user namespaces are not available ({msg})"
            return f"the overlay mount was refused ({msg})"
    return None
