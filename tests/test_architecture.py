"""Each room imports only what docs/architecture.md allows: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never bring in (directly or through what it imports)
FORBIDDEN = {
    "dfl_ray.ledger": {"torch", "ray", "dfl_ray.defense", "dfl_ray.node", "dfl_ray.actors",
                       "dfl_ray.models"},
    "dfl_ray.defense": {"torch", "ray", "dfl_ray.node", "dfl_ray.actors", "dfl_ray.models"},
    "dfl_ray.node": {"ray", "dfl_ray.actors", "dfl_ray.runner"},
}


def loaded_modules(package: str) -> set[str]:
    code = f"import json, sys, {package}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_room_imports_nothing_forbidden(package: str) -> None:
    loaded = loaded_modules(package)
    bad = {m for m in loaded for f in FORBIDDEN[package] if m == f or m.startswith(f + ".")}
    assert not bad, f"{package} imports {sorted(bad)}"


def test_only_actors_and_the_driver_import_ray() -> None:
    """Ray appears in dfl_ray/actors/ and, inside functions, in the driver (runner.py)."""
    offenders = []
    for path in sorted((REPO / "dfl_ray").rglob("*.py")):
        rel = path.relative_to(REPO / "dfl_ray").as_posix()
        if rel.startswith("actors/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if text.startswith(("import ray", "from ray")):
                at_top = not line.startswith((" ", "\t"))
                if at_top or rel != "runner.py":
                    offenders.append(f"{rel}:{number}: {text}")
    assert not offenders, offenders
