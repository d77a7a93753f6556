"""Ledger cost per operation and per node round for LeNet: `python benchmarks/ledger_bench.py`.

Two parts, in one run:

1. Per operation: the median and minimum of `--repeat` timings (time.perf_counter); fast
   operations are timed over a loop of `--number` calls and reported per call. Alternatives
   are timed side by side (finiteness tests, block decoding for endorsers, trusted appends,
   payload writes). The payload is 431,080 random float32 values (1.72 MB, fixed seed), the
   LeNet of the DFL spec; blocks hold 10 transactions with 9 receipts each.
2. Per round: one node's ledger work in the default protocol shape (10 nodes, every node
   receives every model; block size 10, 9 endorsers), following the node's handlers
   (`DFLNode.publish`, `on_transaction`, `on_receipt`, `seal_block`, `on_endorse_request`,
   `on_endorse_reply`) call for call: per round it publishes 1 transaction and its payload,
   receives 9 new transactions (plus 20 gossip duplicates) with their payloads, issues 9
   receipts and takes 9 back, seals 1/10 of a block with its 9 endorsements, and endorses 9/10
   of a peer's block. The compute it is compared with runs interleaved, as in a node (so the
   ledger meets the caches the compute leaves): one local epoch of LeNet on 720 MNIST-shaped
   samples (batch 64, 12 SGD steps) and scoring 10 models on 80 validation samples, on one
   torch thread. The peers' own work (their signing, endorsing) is not this node's and is
   done outside the timings. It prints ledger ms per round, compute ms per round, the ledger
   share, and the floor set by the cryptography the protocol requires (10 BLAKE3 hashes of
   1.72 MB, 19 Ed25519 verifications, 11 signatures and 9 finiteness tests per round).

On a machine shared with other work, compare figures from one run and look at the minimums.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import blake3
import numpy as np
import torch

from dfl_ray.ledger import (
    Block,
    BlockEntry,
    ChainStore,
    Endorsement,
    Genesis,
    Identity,
    Receipt,
    Transaction,
    check_payload,
    check_transaction,
    endorse,
    endorsement_message,
    model_digest,
    reputation_digest,
    select_block_entries,
    verify_signature,
)
from dfl_ray.ledger.identity import verify_signature_openssl
from dfl_ray.ledger.transaction import is_finite
from dfl_ray.models import (
    LeNet,
    ModelSpec,
    evaluate,
    model_to_vector,
    train_steps,
    vector_to_model,
)
from dfl_ray.models.training import SGDSettings, make_optimizer
from dfl_ray.results import Tee, add_results_argument, record_output
from dfl_ray.timing import Stopwatch

N_PARAMS = 431_080
N_PEERS = 9
BLOCK_SIZE = 10
DUPLICATES = 20  # gossip copies a node of the 10-node flooded network drops per round
KEEP_PAYLOADS = 2  # the configured default (ledger.keep_payloads)
N_TRAIN, N_VAL, BATCH = 720, 80, 64
NOW = 1_700_000_000.0


def timed(fn: Callable[[], object], repeat: int, number: int = 1,
          setup: Callable[[], object] | None = None) -> list[float]:
    """Seconds per call of `fn`, one value per repeat (each over `number` calls)."""
    out = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out.append((time.perf_counter() - t0) / number)
    return out


def fmt_time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.3f} ms"
    return f"{seconds * 1e6:8.1f} us"


@dataclass
class Network:
    """The benchmark's identities, genesis and transaction factory (fixed seeds)."""

    spec_id: bytes
    genesis: Genesis
    owner: Identity
    peers: list[Identity]

    @classmethod
    def make(cls, spec_id: bytes, initial: np.ndarray) -> Network:
        owner = Identity.from_seed(b"\x01" * 32)
        peers = [Identity.from_seed(bytes([i + 2]) * 32) for i in range(N_PEERS)]
        members = tuple(sorted(i.public_key for i in (owner, *peers)))
        genesis = Genesis("bench", 2, spec_id, model_digest(spec_id, initial), 10, 4,
                          BLOCK_SIZE, 60.0, members)
        return cls(spec_id, genesis, owner, peers)

    def tx(self, seq: int, model: bytes, creator: Identity | None = None,
           created_at: float = NOW) -> Transaction:
        return Transaction.create(
            creator or self.owner, genesis_hash=self.genesis.hash, seq=seq,
            created_at=created_at, expires_at=created_at + 60, ttl=10, model_digest=model,
            base_digest=self.genesis.initial_model_digest, self_score=0.9, n_samples=6000,
        )  # fmt: skip

    def receipts(self, tx: Transaction, signers: list[Identity]) -> tuple[Receipt, ...]:
        return tuple(sorted(
            (Receipt.create(p, tx_id=tx.tx_id, score=0.9, received_at=NOW + 1, hop=1)
             for p in signers), key=lambda r: r.receiver))  # fmt: skip


# -- part 1: per operation --------------------------------------------------------------------


def operation_rows(net: Network, vec: np.ndarray, repeat: int,
                   number: int) -> list[tuple[str, list[float], str]]:
    rows: list[tuple[str, list[float], str]] = []

    def add(name: str, times: list[float], note: str = "") -> None:
        rows.append((name, times, note))

    spec_id, genesis, owner, peers = net.spec_id, net.genesis, net.owner, net.peers
    d = model_digest(spec_id, vec)

    # Hashing and the finiteness test: the per-payload work of the receive path.
    mb = vec.nbytes / 1e6
    t_model = timed(lambda: model_digest(spec_id, vec), repeat, 5)
    add("model_digest (1.72 MB)", t_model, f"{mb / 1e3 / min(t_model):.2f} GB/s (best)")
    add("  bare blake3(memoryview(vec))",
        timed(lambda: blake3.blake3(memoryview(vec).cast("B")).digest(), repeat, 5))
    add("is_finite (min and max)", timed(lambda: is_finite(vec), repeat, 5), "no temporary")
    add("  isfinite(vec).all()", timed(lambda: bool(np.isfinite(vec).all()), repeat, 5),
        "the test it replaced")

    # Signatures and the small objects.
    key_msg = b"\0" * 200
    signature = owner.sign(key_msg)
    add("Ed25519 sign (200 B)", timed(lambda: owner.sign(key_msg), repeat, number))
    add("Ed25519 verify (200 B)",
        timed(lambda: verify_signature(owner.public_key, signature, key_msg), repeat, number),
        "libsodium")
    add("  the same through OpenSSL",
        timed(lambda: verify_signature_openssl(owner.public_key, signature, key_msg), repeat,
              number), "cryptography's Ed25519PublicKey.verify")
    seqs = iter(range(10**9))
    add("Transaction.create (sign)", timed(lambda: net.tx(next(seqs), d), repeat, number))
    tx = net.tx(0, d)
    data = tx.encode()
    add("Transaction.decode", timed(lambda: Transaction.decode(data), repeat, number),
        f"{len(data)} bytes")
    add("Transaction.id_of (duplicate check)",
        timed(lambda: Transaction.id_of(data), repeat, number), "no decode")
    fresh: list[Transaction] = []

    def refill() -> None:
        # encode() is cached per object, so time it on copies that have not encoded yet.
        fresh[:] = [replace(tx) for _ in range(number)]

    add("Transaction.encode (uncached)",
        timed(lambda: fresh.pop().encode(), repeat, number, setup=refill))
    receipt_data = net.receipts(tx, peers[:1])[0].encode()
    add("Receipt.decode", timed(lambda: Receipt.decode(receipt_data), repeat, number))

    def receive() -> None:
        check_transaction(tx, genesis=genesis, now=NOW + 1, last_seq=None)
        check_payload(tx, spec_id=spec_id, expected_size=N_PARAMS, vec=vec)

    add("check_transaction + check_payload", timed(receive, repeat, 5), "per received tx")

    # Blocks: the endorser's decoding, the trusted append.
    entries = [BlockEntry(t, net.receipts(t, peers)) for t in (net.tx(s, d) for s in range(10))]
    block = Block.create(
        owner, height=0, prev_hash=genesis.hash, genesis_hash=genesis.hash, created_at=NOW,
        entries=entries, model_digest_after=d,
        reputation_digest=reputation_digest({p.address: 1.0 for p in peers}),
    )  # fmt: skip
    encoded = block.encode()
    mine = {r.id for r in block.receipts() if r.receiver == peers[0].public_key}
    add("Block.decode + endorse",
        timed(lambda: endorse(peers[0], Block.decode(encoded), mine), repeat, 5),
        "endorsing from the decoded block")
    add("Block.read_claims + endorse", timed(
        lambda: endorse(peers[0], Block.read_claims(encoded, peers[0].public_key), mine),
        repeat, 5), "what a node does: decodes its own 10 receipts only")

    with tempfile.TemporaryDirectory() as tmp:
        add("append_block (10 tx x 9 rcpt)",
            time_append(net, d, Path(tmp) / "checked", repeat, verified=False),
            "all 110 signatures + commit")
        add("append_block, verified=True",
            time_append(net, d, Path(tmp) / "trusted", repeat, verified=True),
            "own block: structure only + commit")
        add(f"put_payload, keep {KEEP_PAYLOADS}, + commit",
            time_put(net, Path(tmp) / "kept", repeat, KEEP_PAYLOADS),
            "overwrites the recycled spare file")
        add("put_payload, keep all, + commit", time_put(net, Path(tmp) / "all", repeat, None),
            "a new file each time")
    return rows


def time_append(net: Network, d: bytes, folder: Path, repeat: int, *,
                verified: bool) -> list[float]:
    """Seconds per `append_block` of a block of 10 transactions x 9 receipts, 9 endorsements."""
    store = ChainStore.create(folder, net.genesis, net.owner.public_key)
    pending: list[Block] = []

    def next_block() -> None:
        # Built and its transactions recorded outside the timing: only the append counts.
        height = store.height + 1
        items = []
        with store.batch():
            for i in range(BLOCK_SIZE):
                t = net.tx(height * BLOCK_SIZE + i, d)
                store.add_own_transaction(t)
                items.append(BlockEntry(t, net.receipts(t, net.peers)))
        b = Block.create(
            net.owner, height=height, prev_hash=store.tip_hash, genesis_hash=net.genesis.hash,
            created_at=NOW, entries=items, model_digest_after=d,
            reputation_digest=reputation_digest({p.address: 1.0 for p in net.peers}),
        )  # fmt: skip
        issued = {r.id for e in items for r in e.receipts}
        pending[:] = [b.with_endorsements(endorse(p, b, issued) for p in net.peers)]

    try:
        return timed(lambda: store.append_block(pending[0], verified=verified), repeat,
                     setup=next_block)
    finally:
        store.close()


def time_put(net: Network, folder: Path, repeat: int, keep: int | None) -> list[float]:
    """Seconds per own payload kept (digest known, as when publishing), with its commit."""
    store = ChainStore.create(folder, net.genesis, net.owner.public_key, keep_payloads=keep)
    rng = np.random.default_rng(1)
    pending: list[tuple[bytes, np.ndarray]] = []

    def next_payload() -> None:
        v = rng.standard_normal(N_PARAMS).astype(np.float32)
        pending[:] = [(model_digest(net.spec_id, v), v)]

    def put() -> None:
        with store.batch():
            store.put_payload(*pending[0], verified=True)

    try:
        return timed(put, repeat, setup=next_payload)
    finally:
        store.close()


# -- part 2: per round ------------------------------------------------------------------------


@dataclass
class Compute:
    """The node's local work: one epoch of LeNet on 720 samples, scoring on 80."""

    model: torch.nn.Module
    scorer: torch.nn.Module
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    rng: np.random.Generator

    @classmethod
    def make(cls, seed: int = 0) -> Compute:
        torch.manual_seed(seed)
        gen = np.random.default_rng(seed)
        model, scorer = LeNet(), LeNet()
        return cls(
            model=model, scorer=scorer,
            optimizer=make_optimizer(model, SGDSettings()),
            images=torch.from_numpy(gen.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8)),
            labels=torch.from_numpy(gen.integers(0, 10, N_TRAIN)),
            val_images=torch.from_numpy(gen.integers(0, 256, (N_VAL, 28, 28), dtype=np.uint8)),
            val_labels=torch.from_numpy(gen.integers(0, 10, N_VAL)),
            rng=gen,
        )  # fmt: skip

    def train(self) -> None:
        train_steps(self.model, self.optimizer, self.images, self.labels, batch_size=BATCH,
                    steps=-(-N_TRAIN // BATCH), rng=self.rng)

    def score(self, vec: np.ndarray) -> float:
        vector_to_model(vec, self.scorer)
        return evaluate(self.scorer, self.val_images, self.val_labels, batch_size=256)


@dataclass
class RoundSim:
    """One node (the network's owner identity) and its 9 peers, round by round.

    Only the owner's work is timed, in the node's categories: "ledger" exactly where
    `DFLNode` times it, "train" and "score" for the compute. With `compute=None` the ledger
    work runs back to back (warm caches).
    """

    net: Network
    store: ChainStore
    compute: Compute | None
    vec: np.ndarray
    timer: Stopwatch = field(default_factory=Stopwatch)
    seq: int = 0
    seen: set[bytes] = field(default_factory=set)
    last_seq: dict[bytes, int] = field(default_factory=dict)
    issued: dict[bytes, Receipt] = field(default_factory=dict)  # tx_id -> receipt we issued
    peer_txs: dict[bytes, list[Transaction]] = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(5))

    @contextmanager
    def ledger(self) -> Iterator[None]:
        with self.timer.time("ledger"):
            yield

    @contextmanager
    def wave(self) -> Iterator[None]:
        """One message wave: its store writes commit once (`DFLNode.on_messages`)."""
        batch = self.store.batch()
        with self.ledger():
            batch.__enter__()
        yield
        with self.ledger():
            batch.__exit__(None, None, None)

    def score(self, vec: np.ndarray) -> float:
        if self.compute is None:
            return 0.5
        with self.timer.time("score"):
            return self.compute.score(vec)

    def round(self, r: int) -> None:
        net, store = self.net, self.store
        now = NOW + r
        # The peers publish (their work): 9 fresh models near ours, signed transactions.
        base = self.vec if self.compute is None else model_to_vector(self.compute.model)
        noise = self.rng.standard_normal(N_PARAMS, dtype=np.float32) * np.float32(1e-3)
        incoming = []
        for i, p in enumerate(net.peers):
            v = base + np.roll(noise, i + 1)
            tx = net.tx(r, model_digest(net.spec_id, v), p, created_at=now)
            self.peer_txs.setdefault(p.public_key, []).append(tx)
            incoming.append((tx.encode(), v))

        # Train and publish (DFLNode.train, DFLNode.publish).
        if self.compute is not None:
            with self.timer.time("train"):
                self.compute.train()
        # Without training, the own model still changes every round (a payload already on
        # disk would be checked, not written).
        own = base + noise if self.compute is None else model_to_vector(self.compute.model)
        own_score = self.score(own)
        with self.ledger():
            d = model_digest(net.spec_id, own)
            own_tx = Transaction.create(
                net.owner, genesis_hash=net.genesis.hash, seq=self.seq, created_at=now,
                expires_at=now + 60, ttl=10, model_digest=d,
                base_digest=net.genesis.initial_model_digest, self_score=own_score,
                n_samples=N_TRAIN,
            )  # fmt: skip
            own_tx.encode()
            with store.batch():
                store.add_own_transaction(own_tx, verified=True)
                store.put_payload(d, own, verified=True)
        self.seq += 1
        self.seen.add(own_tx.tx_id)

        # Receive: 9 new transactions, then the duplicates gossip brings (on_transaction).
        duplicates = [incoming[i % N_PEERS] for i in range(DUPLICATES)]
        with self.wave():
            for header, v in incoming + duplicates:
                self.receive(header, v, now)

        # The peers' receipts for our transaction come back (on_receipt).
        back = [rc.encode() for rc in net.receipts(own_tx, net.peers)]
        with self.wave():
            for data in back:
                with self.ledger():
                    receipt = Receipt.decode(data)
                    receipt.verify()
                    if store.has_transaction(receipt.tx_id):
                        store.add_receipt(receipt, verified=True)

        with self.ledger():
            due = store.pending_count() >= BLOCK_SIZE  # seal_block's check, every round
        if due:
            self.seal(now)
            self.endorse_peer_blocks(now)

    def receive(self, header: bytes, vec: np.ndarray, now: float) -> None:
        store, net = self.store, self.net
        with self.ledger():
            tx_id = Transaction.id_of(header)
            if tx_id in self.seen:
                return
            tx = Transaction.decode(header)
            check_transaction(tx, genesis=net.genesis, now=now,
                              last_seq=self.last_seq.get(tx.creator))
            check_payload(tx, spec_id=net.spec_id, expected_size=N_PARAMS, vec=vec)
        self.seen.add(tx_id)
        self.last_seq[tx.creator] = tx.seq
        score = self.score(vec)
        with self.ledger():
            receipt = Receipt.create(net.owner, tx_id=tx_id, score=score, received_at=now, hop=1)
            store.add_issued_receipt(receipt, verified=True)
            receipt.encode()
        self.issued[tx_id] = receipt

    def seal(self, now: float) -> None:
        """seal_block, the peers' endorsements (their work), on_endorse_reply, the append."""
        net, store = self.net, self.store
        with self.ledger():
            entries = select_block_entries(store.pending_transactions(), n_peers=N_PEERS,
                                           block_size=BLOCK_SIZE)
            assert entries is not None
            tip = store.tip()
            own = self.vec if self.compute is None else model_to_vector(self.compute.model)
            block = Block.create(
                net.owner, height=store.height + 1,
                prev_hash=tip.hash if tip is not None else net.genesis.hash,
                genesis_hash=net.genesis.hash, created_at=now, entries=entries,
                model_digest_after=model_digest(net.spec_id, own),
                reputation_digest=reputation_digest({p.address: 1.0 for p in net.peers}),
            )  # fmt: skip
            request = block.encode()
        replies = []
        for p in net.peers:
            claims = Block.read_claims(request, p.public_key)
            replies.append(endorse(p, claims, {r.id for r in claims.receipts}))
        endorsements = []
        for e in replies:
            with self.ledger():
                if verify_signature(e.signer, e.signature, endorsement_message(block.hash)):
                    endorsements.append(Endorsement(e.signer, e.signature))
        with self.wave(), self.ledger():
            store.append_block(block.with_endorsements(endorsements), verified=True)

    def endorse_peer_blocks(self, now: float) -> None:
        """on_endorse_request for each peer's block of its last 10 transactions."""
        net = self.net
        others = {p.public_key: p for p in net.peers}
        requests = []
        for p in net.peers:  # the peers seal (their work), with our real receipts inside
            signers = [q for k, q in others.items() if k != p.public_key]
            entries = []
            for tx in self.peer_txs.pop(p.public_key)[-BLOCK_SIZE:]:
                receipts = net.receipts(tx, signers) + (self.issued[tx.tx_id],)
                entries.append(BlockEntry(tx, tuple(sorted(receipts, key=lambda r: r.receiver))))
            requests.append(Block.create(
                p, height=0, prev_hash=net.genesis.hash, genesis_hash=net.genesis.hash,
                created_at=now, entries=entries, model_digest_after=b"\1" * 32,
                reputation_digest=b"\2" * 32).encode())  # fmt: skip
        with self.wave():  # one wave of endorsement requests
            for data in requests:
                with self.ledger():
                    claims = Block.read_claims(data, net.owner.public_key)
                    endorse(net.owner, claims, self.store.issued_receipt_ids())


@dataclass(frozen=True)
class RoundFigures:
    ledger_ms: float
    compute_ms: float

    @property
    def share(self) -> float:
        return self.ledger_ms / (self.ledger_ms + self.compute_ms)


def run_rounds(net: Network, vec: np.ndarray, rounds: int, with_compute: bool,
               folder: Path) -> RoundFigures:
    """Per-round ledger and compute ms over `rounds` rounds after `BLOCK_SIZE` warm-up rounds."""
    store = ChainStore.create(folder, net.genesis, net.owner.public_key,
                              keep_payloads=KEEP_PAYLOADS)
    sim = RoundSim(net, store, Compute.make() if with_compute else None, vec)
    for r in range(BLOCK_SIZE):
        sim.round(r)
    sim.timer = Stopwatch()
    for r in range(BLOCK_SIZE, BLOCK_SIZE + rounds):
        sim.round(r)
    store.close()
    s = sim.timer.seconds
    return RoundFigures(1e3 * s["ledger"] / rounds, 1e3 * (s["train"] + s["score"]) / rounds)


def crypto_floor_ms(rows: list[tuple[str, list[float], str]]) -> tuple[float, str]:
    """The cryptography a round requires, at the best per-operation times measured above."""
    best = {name: min(times) for name, times, _ in rows}
    hashes = 1 + N_PEERS + 1 / BLOCK_SIZE  # publish, receive, the block's model digest
    verifies = N_PEERS + N_PEERS + N_PEERS / BLOCK_SIZE  # transactions, receipts, endorsements
    signs = 1 + N_PEERS + 1 / BLOCK_SIZE + N_PEERS / BLOCK_SIZE  # tx, receipts, block, endorse
    parts = {
        "hash": hashes * best["model_digest (1.72 MB)"],
        "verify": verifies * best["Ed25519 verify (200 B)"],
        "sign": signs * best["Ed25519 sign (200 B)"],
        "finite": N_PEERS * best["is_finite (min and max)"],
    }
    detail = ", ".join(f"{k} {1e3 * v:.2f}" for k, v in parts.items())
    return 1e3 * sum(parts.values()), (
        f"{hashes:g} hashes, {verifies:g} verifies, {signs:g} signs, {N_PEERS} finiteness "
        f"tests: {detail} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timings per operation")
    parser.add_argument("--number", type=int, default=50, help="calls per timing for fast ops")
    parser.add_argument("--rounds", type=int, default=20,
                        help="measured rounds per round-benchmark repeat (a multiple of 10)")
    parser.add_argument("--round-repeat", type=int, default=3,
                        help="repeats of the round benchmark (minimums are reported)")
    add_results_argument(parser)
    args = parser.parse_args()
    if min(args.repeat, args.number, args.rounds, args.round_repeat) < 1:
        parser.error("--repeat, --number, --rounds and --round-repeat must be >= 1")
    if args.rounds % BLOCK_SIZE:
        parser.error(f"--rounds must be a multiple of {BLOCK_SIZE} (whole blocks)")
    torch.set_num_threads(1)  # one core per node, as the node actors run
    with Tee() as tee:
        report(args)
    if args.write_results:
        print(f"wrote {record_output('ledger_bench', 'Ledger costs', tee.text)}")


def report(args: argparse.Namespace) -> None:
    """Measure and print every figure of the benchmark."""
    spec = ModelSpec.of(LeNet(), "lenet")
    vec = np.random.default_rng(0).standard_normal(N_PARAMS).astype(np.float32)
    vec.flags.writeable = False  # like a view of the object store
    net = Network.make(spec.id, vec)

    rows = operation_rows(net, vec, args.repeat, args.number)
    width = max(len(r[0]) for r in rows)
    print(f"ledger benchmark: payload {N_PARAMS:,} float32 = {vec.nbytes / 1e6:.2f} MB, "
          f"repeat={args.repeat}, number={args.number}")
    print(f"{'operation':<{width}}  {'median':>11}  {'min':>11}  note")
    print("-" * (width + 40))
    for name, times, note in rows:
        print(f"{name:<{width}}  {fmt_time(statistics.median(times))}  {fmt_time(min(times))}  "
              f"{note}")

    print(f"\none node per round: publish 1, receive {N_PEERS} (+{DUPLICATES} duplicates), "
          f"{N_PEERS} receipts issued and {N_PEERS} taken back, 1/{BLOCK_SIZE} of a block with "
          f"{N_PEERS} endorsements, {N_PEERS}/{BLOCK_SIZE} of an endorsement given; "
          f"keep_payloads {KEEP_PAYLOADS}; {args.rounds} rounds x {args.round_repeat}")
    print(f"compute: 1 epoch of LeNet on {N_TRAIN} samples (batch {BATCH}) + scoring 10 models "
          f"on {N_VAL} samples, 1 torch thread")
    warm, mixed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.round_repeat):
            warm.append(run_rounds(net, vec, args.rounds, False, Path(tmp) / f"warm{i}"))
            mixed.append(run_rounds(net, vec, args.rounds, True, Path(tmp) / f"mixed{i}"))
            print(f"  repeat {i}: ledger {mixed[-1].ledger_ms:6.2f} ms with compute "
                  f"{mixed[-1].compute_ms:6.1f} ms -> share {100 * mixed[-1].share:5.2f} %; "
                  f"ledger alone (warm caches) {warm[-1].ledger_ms:6.2f} ms")
    ledger_ms = min(f.ledger_ms for f in mixed)
    compute_ms = min(f.compute_ms for f in mixed)
    warm_ms = min(f.ledger_ms for f in warm)
    floor_ms, floor_detail = crypto_floor_ms(rows)
    print(f"ledger per round (min)      {ledger_ms:7.2f} ms   interleaved with the compute")
    print(f"ledger per round, warm      {warm_ms:7.2f} ms   the same work back to back")
    print(f"compute per round (min)     {compute_ms:7.1f} ms")
    print(f"ledger share                {100 * ledger_ms / (ledger_ms + compute_ms):7.2f} %   "
          f"(warm: {100 * warm_ms / (warm_ms + compute_ms):.2f} %)")
    print(f"cryptographic floor         {floor_ms:7.2f} ms   = "
          f"{100 * floor_ms / (floor_ms + compute_ms):.2f} % share; {floor_detail}")
    print(f"  floor / warm ledger       {100 * floor_ms / warm_ms:7.1f} %   the rest is SQLite, "
          "the payload file, and Python around them")


if __name__ == "__main__":
    main()
