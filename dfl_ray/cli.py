"""The `dfl-ray` console command: `run` an experiment, `ledger verify|show` a node's chain."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfl-ray", description="Decentralized, blockchain-based federated learning on Ray."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from dfl_ray import runner
    from dfl_ray.ledger import cli as ledger_cli

    runner.register(sub)
    ledger_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
