"""Which dfl_ray code a process runs: a fingerprint of the package's source files.

Every host actor of a run must run the code its driver runs. Ray puts the driver's working
directory first on each worker's import path, so a driver started from one checkout, with
another checkout of dfl_ray on PYTHONPATH or in the working directory, would have its node
actors run code other than its own, and a cluster host with a stale install would do the same;
the run would go on and its figures would describe neither. The network compares each host's
fingerprint with the driver's before it makes any node, and every summary records it.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
"""The dfl_ray package this process imported."""


class CodeMismatchError(RuntimeError):
    """A host runs dfl_ray code other than the driver's; the message names both."""


@cache
def fingerprint() -> str:
    """`fingerprint_of` this process's package, read once per process."""
    return fingerprint_of(PACKAGE)


def fingerprint_of(package: Path) -> str:
    """16 hex digits over the relative path and bytes of every .py file under `package`."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def describe() -> dict[str, str]:
    """This process's code: its fingerprint, where the package lies, and the name of the host it
    runs on (`environment()["machine"]` is the architecture, not this)."""
    return {"fingerprint": fingerprint(), "path": str(PACKAGE), "host": platform.node()}


def check_same_code(others: Mapping[str, Mapping[str, str]]) -> None:
    """Raise CodeMismatchError naming each of `others` (name: its `describe()`) whose code is
    not this process's."""
    mine = describe()
    wrong = {name: d for name, d in others.items() if d.get("fingerprint") != mine["fingerprint"]}
    if not wrong:
        return
    lines = [f"{name} runs dfl_ray {d.get('fingerprint')} from {d.get('path')} on "
             f"{d.get('host')}" for name, d in sorted(wrong.items())]
    raise CodeMismatchError(
        f"this process runs dfl_ray {mine['fingerprint']} from {mine['path']} on "
        f"{mine['host']}, but " + "; ".join(lines) + ". Every process of a run must run the "
        "same code: Ray puts the driver's working directory first on each worker's import "
        "path, so start the run from the folder whose dfl_ray you mean (or from outside any "
        "checkout), and install the same version on every cluster host")
