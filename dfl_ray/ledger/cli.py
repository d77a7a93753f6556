"""The `ledger verify PATH` and `ledger show PATH [--json]` commands for a node's chain store."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from dfl_ray.ledger.block import Block
from dfl_ray.ledger.errors import ChainError, DecodeError, StoreError
from dfl_ray.ledger.identity import address_of, short_address
from dfl_ray.ledger.store import ChainSnapshot, read_chain
from dfl_ray.ledger.verify import verify_chain


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `ledger` command and its subcommands; each sets `func(args) -> int`."""
    ledger = subparsers.add_parser("ledger", help="inspect and verify a node's chain store")
    sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    verify = sub.add_parser(
        "verify", help="verify every stored row (blocks, records, indexes) and payload file"
    )
    verify.add_argument("path", help="store folder or its chain.sqlite")
    verify.set_defaults(func=run_verify)
    show = sub.add_parser("show", help="print the chain block by block")
    show.add_argument("path", help="store folder or its chain.sqlite")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(func=run_show)


def run_verify(args: argparse.Namespace) -> int:
    """Print `OK height=.. tip=.. blocks=.. txs=.. receipts=..` (0), or (1) `FAIL height=..
    reason=..: <table> row <i> (rowid <r>): ...` for a bad row, `FAIL <why>` for no store."""
    try:
        s = verify_chain(args.path)
    except ChainError as err:
        print(f"FAIL height={err.height} reason={err.reason}: {err.detail}")
        return 1
    except StoreError as err:
        print(f"FAIL {err}")
        return 1
    print(
        f"OK height={s.height} tip={s.tip_hash.hex()} blocks={s.n_blocks} "
        f"txs={s.n_transactions} receipts={s.n_receipts}"
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print the chain readably, or as JSON with `--json`; 1 if it cannot be read."""
    try:
        chain = read_chain(args.path)
    except (StoreError, DecodeError) as err:
        print(f"cannot read chain: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(chain_to_json(chain), indent=2))
    else:
        print(format_chain(chain))
    return 0


def _time(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, OSError, ValueError):
        return f"{ts!r} (not a calendar time)"  # any finite float is a valid created_at


def format_chain(chain: ChainSnapshot) -> str:
    """One paragraph per block: height, hash, time, transactions, endorsers."""
    g = chain.genesis
    lines = [
        f"genesis {g.hash.hex()}  network={g.network_id} protocol={g.protocol_version} "
        f"block_size={g.block_size}",
        f"owner   {short_address(chain.owner) if len(chain.owner) == 32 else '?'}  "
        f"blocks={len(chain.blocks)}",
    ]
    for block in chain.blocks:
        lines.append("")
        lines.append(f"block {block.height}  {block.hash.hex()}")
        lines.append(f"  time {_time(block.created_at)}  prev {block.prev_hash.hex()[:16]}..")
        lines.append(f"  model_after {block.model_digest_after.hex()[:16]}..")
        for entry in block.entries:
            tx = entry.tx
            lines.append(
                f"  tx seq={tx.seq} score={tx.self_score:.4f} samples={tx.n_samples} "
                f"receipts={len(entry.receipts)} id={tx.tx_id.hex()[:16]}.."
            )
        endorsers = ", ".join(short_address(e.signer)[:12] for e in block.endorsements)
        lines.append(f"  endorsed by {len(block.endorsements)}: {endorsers or '-'}")
    return "\n".join(lines)


def _block_json(block: Block) -> dict[str, Any]:
    return {
        "height": block.height,
        "hash": block.hash.hex(),
        "prev_hash": block.prev_hash.hex(),
        "created_at": block.created_at,
        "creator": address_of(block.creator),
        "model_digest_after": block.model_digest_after.hex(),
        "reputation_digest": block.reputation_digest.hex(),
        "transactions": [
            {
                "tx_id": e.tx.tx_id.hex(),
                "seq": e.tx.seq,
                "created_at": e.tx.created_at,
                "self_score": e.tx.self_score,
                "n_samples": e.tx.n_samples,
                "model_digest": e.tx.model_digest.hex(),
                "receipts": [
                    {"receiver": address_of(r.receiver), "score": r.score, "hop": r.hop,
                     "received_at": r.received_at}
                    for r in e.receipts
                ],
            }
            for e in block.entries
        ],
        "endorsers": [address_of(e.signer) for e in block.endorsements],
    }


def chain_to_json(chain: ChainSnapshot) -> dict[str, Any]:
    g = chain.genesis
    return {
        "genesis": {
            "hash": g.hash.hex(),
            "network_id": g.network_id,
            "protocol_version": g.protocol_version,
            "model_spec_id": g.model_spec_id.hex(),
            "initial_model_digest": g.initial_model_digest.hex(),
            "ttl": g.ttl,
            "buffer_size": g.buffer_size,
            "block_size": g.block_size,
            "expiry_s": g.expiry_s,
        },
        "owner": address_of(chain.owner) if len(chain.owner) == 32 else None,
        "height": len(chain.blocks) - 1,
        "blocks": [_block_json(b) for b in chain.blocks],
    }
