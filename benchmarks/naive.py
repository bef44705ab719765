"""The naive reference: what the seed's prototype does for `true` (walk, read, sha256, dict, twice)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys


def snapshot(root: str) -> dict[str, str]:
    manifest: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                manifest[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return manifest


def main() -> int:
    root = sys.argv[1]
    pre = snapshot(root)
    subprocess.run(["true"], check=True)
    post = snapshot(root)
    diff = {
        "added": sorted(set(post) - set(pre)),
        "removed": sorted(set(pre) - set(post)),
        "changed": sorted(p for p in pre if p in post and pre[p] != post[p]),
    }
    json.dumps({"pre": pre, "post": post, "diff": diff}, sort_keys=True, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
