"""Crash safety: a writer killed with SIGKILL mid-stream leaves a chain that verifies."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ledger_factories import Net

from dfl_ray.ledger import ChainStore, verify_chain

# The child extends the chain forever, one batch per block (own txs, payloads, receipts, the
# block proposed, then stored, then the node's checkpoint), and reports each committed height on stdout; only the parent's kill stops it. At
# height `pause_at` it reports "inside" from within the open batch and waits on stdin, so the
# parent can kill it while a transaction is provably half-written. After each reported height it
# waits for the parent's ack, so however slow the parent is to read, the writer is never more
# than one block past the last height the parent saw.
CHILD = """
import sys
sys.path.insert(0, sys.argv[2])
from ledger_factories import Net, identity, make_genesis
from dfl_ray.ledger import ChainStore, Checkpoint
from dfl_ray.ledger.checkpoint import parts_digest, state_parts

pause_at = int(sys.argv[3])
net = Net(make_genesis(), identity(1), [identity(i) for i in range(2, 5)])
store = ChainStore.open(sys.argv[1], expected_genesis=net.genesis)
height, prev = store.height + 1, store.tip_hash
while True:
    entries = [net.entry(2 * height), net.entry(2 * height + 1)]
    block = net.block(height, prev, entries)
    with store.batch():
        for e in entries:
            store.add_own_transaction(e.tx)
            store.put_payload(e.tx.model_digest, net.vector(e.tx.seq))
            for r in e.receipts:
                store.add_receipt(r)
        store.put_candidate(block)
        if height == pause_at:
            print("inside", flush=True)
            sys.stdin.readline()
        store.append_block(block)
        state = state_parts({"height": height}, {"model": net.vector(1000 + height)})
        store.save_checkpoint(Checkpoint.create(
            net.owner, genesis_hash=net.genesis.hash, turn=height + 1, published=2 * height + 2,
            state_digest=parts_digest(state), created_at=0.0), state)
    print(height, flush=True)
    sys.stdin.readline()  # the parent's ack: the writer runs at most one block ahead of it
    height, prev = height + 1, block.hash
"""


def _run_and_kill(path: Path, kill_after: int, pause_at: int = -1) -> int:
    """Start a writer, SIGKILL it after `kill_after` lines; return the last height it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(Path(__file__).parent), str(pause_at)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        last = -1
        for _ in range(kill_after):
            line = proc.stdout.readline()
            assert line, f"writer died early: {proc.stderr.read()}"
            if line.strip() != "inside":
                last = int(line)
                assert proc.stdin is not None
                proc.stdin.write("\n")
                proc.stdin.flush()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    return last


def _check(path: Path, net: Net) -> int:
    summary = verify_chain(path)
    assert summary.n_transactions == 2 * (summary.height + 1)
    with ChainStore.open(path, expected_genesis=net.genesis) as store:
        assert store.height == summary.height
        # Each batch is atomic: no own transaction is left pending by a half-written round.
        assert store.pending_transactions() == []
        assert store.last_own_seq == 2 * summary.height + 1
        # The checkpoint and the block it follows committed together; the block proposed
        # with them is gone once stored.
        found = store.checkpoint()
        assert found is not None and found[0].turn == summary.height + 1
        assert store.candidate() is None
    return summary.height


def test_sigkill_mid_stream_leaves_a_verifiable_chain(tmp_path: Path, net: Net) -> None:
    path = tmp_path / "node"
    ChainStore.create(path, net.genesis, net.owner.public_key).close()
    for kill_after in (5, 17, 11):
        # Killed wherever the writer happens to be in its next block.
        reported = _run_and_kill(path, kill_after)
        height = _check(path, net)
        # Every reported block committed; at most one more may have committed unreported.
        assert reported <= height <= reported + 1


def test_sigkill_inside_an_open_batch_keeps_the_old_chain(tmp_path: Path, net: Net) -> None:
    path = tmp_path / "node"
    ChainStore.create(path, net.genesis, net.owner.public_key).close()
    assert _run_and_kill(path, kill_after=4, pause_at=3) == 2  # heights 0, 1, 2, then "inside"
    assert _check(path, net) == 2
    # The payload files of the lost batch may remain on disk; they still match their names.
    assert len(list((path / "payloads").iterdir())) == 8  # 6 committed + 2 of the lost batch
