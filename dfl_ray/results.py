"""docs/results.md, section by section: each script that measures writes and refreshes its own part.

A section named `name` is everything between the lines `<!-- name:begin -->` and
`<!-- name:end -->`; `write_section` replaces it (or appends it) and leaves the rest of the file
as it was. `record_output` writes what a script printed, under the command that printed it, and
`Tee` collects that output while it still goes to the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from dfl_ray.code import fingerprint

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO_ROOT / "docs" / "results.md"
TITLE = "# Measured results\n"


def check_section_name(name: str) -> None:
    """ValueError unless `name` is made of letters, digits, '_', '.' and '-'."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"section name must be letters, digits, '_', '.' or '-', got {name!r}")


def write_section(name: str, markdown: str, path: Path | None = None) -> Path:
    """Put `markdown` in section `name` of `path` (default docs/results.md); return the path.

    ValueError if `name` is not made of letters, digits, '_', '.' and '-', or if the file holds
    a begin or end marker of that name without its partner, or either more than once.
    """
    check_section_name(name)
    target = RESULTS_PATH if path is None else Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}\n"
    text = target.read_text(encoding="utf-8") if target.exists() else TITLE
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    stops = [i for i, line in enumerate(lines) if line.strip() == end]
    if not starts and not stops:
        text = (text if text.endswith("\n") else text + "\n") + "\n" + block
    elif len(starts) == 1 and len(stops) == 1 and starts[0] < stops[0]:
        text = "".join(lines[: starts[0]]) + block + "".join(lines[stops[0] + 1 :])
    else:
        raise ValueError(f"{target}: the markers of section {name!r} are unbalanced "
                         f"(begin on lines {[i + 1 for i in starts]}, end on "
                         f"{[i + 1 for i in stops]})")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def environment() -> dict[str, str]:
    """The interpreter, machine and numeric libraries a run or a measurement used.

    Runs under attack are chaotic: the same seed and configuration on another numpy or torch
    build can end far apart, so every summary and results section names its versions, and
    the fingerprint of the dfl_ray code (`dfl_ray.code`).
    """
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "machine": platform.machine(),
             "cpus": str(os.cpu_count()), "cpu": cpu_model()}
    for package in ("numpy", "torch", "ray"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "missing"
    try:  # the vector kernels torch picked on this CPU: the same versions, other sums
        import torch

        found["torch_cpu"] = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        found["torch_cpu"] = "missing"
    found["dfl_ray"] = fingerprint()
    return found


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's model name (Linux `cpuinfo`), else what `platform` says, else
    "unknown": two installations with the same library versions on other processors may
    round differently, and attacked runs then part."""
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or "unknown"


def record_output(name: str, title: str, output: str, *, markdown: bool = False,
                  argv: list[str] | None = None, path: Path | None = None) -> Path:
    """Write `output` (what a script printed) as section `name`, headed by `title`, the exact
    command that produced it, the date and the machine; as a code block unless `markdown`."""
    args = sys.argv if argv is None else argv
    script = Path(args[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(REPO_ROOT)
    command = shlex.join(["python", script.as_posix(), *args[1:]])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    env = environment()
    machine = (f"{env['cpus']} CPUs ({env['cpu']}, torch kernels {env['torch_cpu']}), "
               f"{env['machine']}, Python {env['python']}, numpy {env['numpy']}, torch "
               f"{env['torch']}")
    body = output.rstrip() if markdown else f"```\n{output.rstrip()}\n```"
    return write_section(name, f"## {title}\n\n`{command}`, {when}, {machine}:\n\n{body}\n", path)


class Tee:
    """Collects what is printed to stdout inside `with Tee() as tee:` while still printing it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._stdout: TextIO | None = None

    def write(self, text: str) -> int:
        self.parts.append(text)
        assert self._stdout is not None
        return self._stdout.write(text)

    def flush(self) -> None:
        if self._stdout is not None:
            self._stdout.flush()

    def __enter__(self) -> Tee:
        self._stdout = sys.stdout
        sys.stdout = self  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout = self._stdout  # type: ignore[assignment]

    @property
    def text(self) -> str:
        return "".join(self.parts)


def add_results_argument(parser: argparse.ArgumentParser) -> None:
    """The `--write-results` flag every measuring script offers."""
    parser.add_argument("--write-results", action="store_true",
                        help="also write what this prints into its section of docs/results.md")
