"""One pass of sha256 (or blake3) over every file of a tree, one thread per core, 1 MiB chunks."""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor


def digest(path: str, algorithm: str) -> str:
    if algorithm == "blake3":
        from blake3 import blake3

        h = blake3()
    else:
        h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    root, threads = sys.argv[1], int(sys.argv[2])
    algorithm = sys.argv[3] if len(sys.argv) > 3 else "sha256"
    paths = [os.path.join(d, n) for d, _s, files in os.walk(root) for n in files]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: digest(p, algorithm), paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
