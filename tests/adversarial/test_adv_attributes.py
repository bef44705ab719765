"""Commands that change what a file is without changing its bytes: owner, xattrs, ACLs, hard links.

Each must end dirty (the MODES values differ), the validator must agree, and ``--isolation rollback``
must put every attribute back (proven by its fresh snapshot and checked here against ``lstat`` and
``listxattr`` of the tree before the run).
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

from .conftest import FULL, cli, run_args, status, tally

_ANY = 0xFFFFFFFF
#: A POSIX ACL granting uid 4242 read access (the kernel's ``system.posix_acl_access`` format).
_ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, uid)
    for tag, perm, uid in ((1, 6, _ANY), (2, 4, 4242), (4, 4, _ANY), (0x10, 4, _ANY), (0x20, 4, _ANY))
)

# name -> (script run as the command, with {p} the target's path; needs root)
ATTACKS: dict[str, tuple[str, bool]] = {
    "xattr-added": ("os.setxattr({p!r}, 'user.planted', b'1')", False),
    "xattr-value": ("os.setxattr({p!r}, 'user.kept', b'forged')", False),
    "xattr-removed": ("os.removexattr({p!r}, 'user.kept')", False),
    "acl-added": ("os.setxattr({p!r}, 'system.posix_acl_access', " + repr(_ACL) + ")", False),
    "hard-link-outside": ("os.link({p!r}, 'outside-' + os.path.basename({p!r}))", False),
    "owner": ("os.chown({p!r}, 4242, -1)", True),
    "group": ("os.chown({p!r}, -1, 4343)", True),
    "security-xattr": ("os.setxattr({p!r}, 'security.planted', b'1')", True),
    "trusted-xattr": ("os.setxattr({p!r}, 'trusted.planted', b'1')", True),
}
TARGETS = ["scratch/f0.txt", "scratch/sub", "scratch/sub/deep.bin", "scratch"] if FULL else ["scratch/f0.txt"]
_DIRS = ("scratch", "scratch/sub")
#: Directories cannot be hard linked.
CASES = [(a, t) for a in sorted(ATTACKS) for t in TARGETS if not (a == "hard-link-outside" and t in _DIRS)]


def _attributes(root: Path) -> dict[str, tuple[int, int, int, int, dict[str, bytes]]]:
    found = {}
    for dirpath, dirs, files in os.walk(root / "scratch"):
        for name in [".", *dirs, *files] if dirpath == str(root / "scratch") else [*dirs, *files]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            names = os.listxattr(path, follow_symlinks=False)
            xattrs = {x: os.getxattr(path, x, follow_symlinks=False) for x in names}
            nlink = st.st_nlink if not path.is_dir() else 0
            found[str(path.relative_to(root))] = (st.st_uid, st.st_gid, st.st_mode, nlink, xattrs)
    return found


@pytest.mark.parametrize("isolation", ["none", "rollback"])
@pytest.mark.parametrize(("attack", "target"), CASES)
def test_attribute_change_is_never_restored(ws: Path, attack: str, target: str, isolation: str) -> None:
    script, needs_root = ATTACKS[attack]
    if needs_root and os.geteuid() != 0:
        pytest.skip("only root can give a file away or write security.* / trusted.* xattrs")
    try:
        os.setxattr(ws / target, "user.kept", b"original")
    except OSError as exc:
        pytest.skip(f"the temporary directory's file system has no user xattrs: {exc}")
    before = _attributes(ws)
    run_id = f"{attack}-{isolation}"
    code = "import os\n" + script.format(p=target)
    args = run_args(run_id, ("scratch",), sys.executable, "-c", code)
    proc = cli(ws, args[0], "--isolation", isolation, *args[1:])
    st = status(ws, run_id)
    false_restored = int(proc.returncode == 0 or (st is not None and st["status"] == "restored"))
    tally("attributes", false_restored=false_restored, tracebacks=int("Traceback" in proc.stderr))
    assert proc.returncode == 4, proc.stderr
    assert st is not None and st["status"] == "dirty", st
    check = cli(ws, "validate", "--run-dir", f"CONTRACTS/_runs/{run_id}")
    assert check.returncode == 1 and "NOT_RESTORED" in check.stdout and "SCHEMA" not in check.stdout
    if isolation == "rollback":
        assert st["rollback"]["verified"] is True, st["rollback"]
        assert _attributes(ws) == before
