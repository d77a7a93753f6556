"""A block of a node's own chain: own transactions with their receipts, signed and endorsed."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from dfl_ray.ledger.encoding import (
    MAX_COUNT,
    MAX_INT,
    Reader,
    Writer,
    decoding,
    remember,
    require_bytes,
    require_finite,
    require_uint,
)
from dfl_ray.ledger.errors import DecodeError, ValidationError
from dfl_ray.ledger.genesis import Genesis
from dfl_ray.ledger.hashing import DIGEST_SIZE, digest
from dfl_ray.ledger.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify_signature
from dfl_ray.ledger.receipt import RECEIPT_TAG, Receipt, check_receipt_fields
from dfl_ray.ledger.signed import Signed
from dfl_ray.ledger.transaction import Transaction, check_lifetime

BLOCK_TAG = b"dfl/block/v1"
ENDORSE_TAG = b"dfl/endorse/v1"
REFUSE_TAG = b"dfl/refuse/v1"
REPUTATION_TAG = b"dfl/reputation/v1"

# Where a receipt's encoding holds its receiver: after the tag and the tx_id blob, past the
# receiver's own length prefix (the layout of `Receipt.signing_bytes`).
_RECEIVER_AT = slice(1 + len(RECEIPT_TAG) + 4 + DIGEST_SIZE + 4,
                     1 + len(RECEIPT_TAG) + 4 + DIGEST_SIZE + 4 + PUBLIC_KEY_SIZE)

# Cached properties of the signed header, which endorsements do not change.
_HEADER_CACHE = ("_unsigned_bytes", "_signed_bytes", "hash")


def _short(data: bytes) -> str:
    return data.hex()[:16] + ".."


@dataclass(frozen=True)
class Endorsement:
    """`signer`'s signature over the `ENDORSE_TAG`-tagged hash of a block."""

    signer: bytes
    signature: bytes

    def __post_init__(self) -> None:
        require_bytes("endorsement signer", self.signer, (PUBLIC_KEY_SIZE,))
        require_bytes("endorsement signature", self.signature, (SIGNATURE_SIZE,))


def endorsement_message(block_hash: bytes) -> bytes:
    """What an endorser signs; the tag keeps it from passing as any other signed object."""
    return Writer(ENDORSE_TAG).blob(block_hash).getvalue()


def refusal_message(block_hash: bytes, reason: str) -> bytes:
    """What a peer signs when it refuses to endorse a block: the block and the reason, under a
    tag of its own, so a refusal can be neither forged nor replayed as an endorsement."""
    return Writer(REFUSE_TAG).blob(block_hash).text(reason).getvalue()


@dataclass(frozen=True)
class BlockEntry:
    """One own transaction with the receipts collected for it."""

    tx: Transaction
    receipts: tuple[Receipt, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.tx, Transaction):
            raise TypeError(f"entry tx must be a Transaction, got {type(self.tx).__name__}")
        if not isinstance(self.receipts, tuple) or not all(
            isinstance(r, Receipt) for r in self.receipts
        ):
            raise TypeError("entry receipts must be a tuple of Receipt")
        if len(self.receipts) > MAX_COUNT:
            raise ValueError(f"an entry holds at most {MAX_COUNT} receipts")


@dataclass(frozen=True)
class Claims:
    """What a block claims from one receipt signer: the block's hash and its receipts naming
    the signer (in block order), with the block's creator, its genesis, and whether the
    creator's signature on it verified: all the signer needs to endorse it."""

    block_hash: bytes
    signer: bytes
    receipts: tuple[Receipt, ...]
    creator: bytes = bytes(PUBLIC_KEY_SIZE)
    genesis_hash: bytes = bytes(DIGEST_SIZE)
    creator_signed: bool = False

    def __post_init__(self) -> None:
        require_bytes("block_hash", self.block_hash, (DIGEST_SIZE,))
        require_bytes("signer", self.signer, (PUBLIC_KEY_SIZE,))
        require_bytes("creator", self.creator, (PUBLIC_KEY_SIZE,))
        require_bytes("genesis_hash", self.genesis_hash, (DIGEST_SIZE,))
        if not isinstance(self.receipts, tuple) or not all(
            isinstance(r, Receipt) and r.receiver == self.signer for r in self.receipts
        ):
            raise TypeError("claims must be a tuple of Receipt naming the signer")


@dataclass(frozen=True)
class Block(Signed):
    """A signed block; `hash` and the signature cover everything except the endorsements.

    DFL keeps no global ledger: each node seals its own transactions and the receipts its peers
    returned into its own hash-linked chain, and the receipt signers endorse the block, which is
    the "partial consensus" of Tian, Guo, Zhang, Al-Ars, "DFL: High-Performance Blockchain-Based
    Federated Learning" (arXiv 2110.15457); spec section 4.
    """

    TAG = BLOCK_TAG
    KIND = "block"
    SIGNER = "creator"

    height: int
    prev_hash: bytes
    genesis_hash: bytes
    creator: bytes
    created_at: float
    entries: tuple[BlockEntry, ...]
    model_digest_after: bytes
    reputation_digest: bytes
    signature: bytes
    endorsements: tuple[Endorsement, ...] = ()

    def __post_init__(self) -> None:
        require_uint("height", self.height, MAX_INT)
        require_bytes("prev_hash", self.prev_hash, (DIGEST_SIZE,))
        require_bytes("genesis_hash", self.genesis_hash, (DIGEST_SIZE,))
        require_bytes("creator", self.creator, (PUBLIC_KEY_SIZE,))
        require_finite("created_at", self.created_at)
        if not isinstance(self.entries, tuple) or not all(
            isinstance(e, BlockEntry) for e in self.entries
        ):
            raise TypeError("block entries must be a tuple of BlockEntry")
        if len(self.entries) > MAX_COUNT:
            raise ValueError(f"a block holds at most {MAX_COUNT} entries")
        require_bytes("model_digest_after", self.model_digest_after, (DIGEST_SIZE,))
        require_bytes("reputation_digest", self.reputation_digest, (DIGEST_SIZE,))
        require_bytes("signature", self.signature, (SIGNATURE_SIZE,))
        if not isinstance(self.endorsements, tuple) or not all(
            isinstance(e, Endorsement) for e in self.endorsements
        ):
            raise TypeError("block endorsements must be a tuple of Endorsement")
        signers = [e.signer for e in self.endorsements]
        # One canonical order makes the encoding unique; `with_endorsements` sorts for callers.
        if any(a >= b for a, b in zip(signers, signers[1:], strict=False)):
            raise ValueError("endorsements must be sorted by signer, one per signer")

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        height: int,
        prev_hash: bytes,
        genesis_hash: bytes,
        created_at: float,
        entries: Sequence[BlockEntry],
        model_digest_after: bytes,
        reputation_digest: bytes,
    ) -> Block:
        """A block by `identity`, signed, with no endorsements yet."""
        return cls._sign_new(
            identity,
            height=height,
            prev_hash=prev_hash,
            genesis_hash=genesis_hash,
            creator=identity.public_key,
            created_at=created_at,
            entries=tuple(entries),
            model_digest_after=model_digest_after,
            reputation_digest=reputation_digest,
        )

    def with_endorsements(self, endorsements: Iterable[Endorsement]) -> Block:
        """This block with `endorsements` (sorted by signer; exact repeats dropped).

        Does not check the signatures; `verify_block` does.
        """
        unique = sorted(set(endorsements), key=lambda e: e.signer)
        signers = [e.signer for e in unique]
        if len(set(signers)) != len(signers):
            raise ValueError("two different endorsements from the same signer")
        endorsed = replace(self, endorsements=tuple(unique))
        # Endorsements lie outside the signed header, so its bytes and hash carry over.
        known = vars(self)
        remember(endorsed, **{k: known[k] for k in _HEADER_CACHE if k in known})
        return endorsed

    def _write_fields(self, w: Writer) -> Writer:
        # The signed header: every field except the signature and the endorsements.
        w.u64(self.height).blob(self.prev_hash).blob(self.genesis_hash).blob(self.creator)
        w.f64(self.created_at).count(len(self.entries))
        for entry in self.entries:
            w.blob(entry.tx.encode()).count(len(entry.receipts))
            for receipt in entry.receipts:
                w.blob(receipt.encode())
        return w.blob(self.model_digest_after).blob(self.reputation_digest)

    @cached_property
    def hash(self) -> bytes:
        """BLAKE3 of the signed header; endorsements can be added without changing it."""
        return self.compute_id()

    def encode(self) -> bytes:
        """The signed header followed by the endorsements."""
        w = Writer.resume(self._signed_bytes).count(len(self.endorsements))
        for e in self.endorsements:
            w.blob(e.signer).blob(e.signature)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Block:
        """The block `data` encodes; it and its objects keep their slices of `data` as their
        encodings, so hashing it or building on it re-encodes nothing."""
        r = Reader(data, cls.TAG)
        with decoding(cls.KIND):
            height, prev_hash, genesis_hash, creator, created_at = (
                r.u64(), r.blob(), r.blob(), r.blob(), r.f64()
            )  # fmt: skip
            entries = []
            for _ in range(r.count()):
                tx = Transaction.decode(r.blob())
                receipts = tuple(Receipt.decode(r.blob()) for _ in range(r.count()))
                entries.append(BlockEntry(tx, receipts))
            model_digest_after, reputation_digest = r.blob(), r.blob()
            signing_end = r.offset
            signature = r.blob()
            signed_end = r.offset
            endorsements = tuple(Endorsement(r.blob(), r.blob()) for _ in range(r.count()))
            r.finish()
        fields = (
            height, prev_hash, genesis_hash, creator, created_at, tuple(entries),
            model_digest_after, reputation_digest, signature, endorsements,
        )  # fmt: skip
        return cls._decoded(fields, r.data[:signing_end], r.data[:signed_end])

    def receipts(self) -> Iterator[Receipt]:
        """Every receipt in the block, entry by entry."""
        for entry in self.entries:
            yield from entry.receipts

    def claims(self, signer: bytes) -> Claims:
        """This block's hash and its receipts naming `signer`."""
        return Claims(self.hash, signer, tuple(r for r in self.receipts() if r.receiver == signer),
                      self.creator, self.genesis_hash, self.has_valid_signature())

    @classmethod
    def read_claims(cls, data: bytes, signer: bytes) -> Claims:
        """`decode(data).claims(signer)`, decoding only the receipts that name `signer`.

        Reads every length prefix and count of the block as `decode` does (truncated or
        ill-framed input raises `DecodeError`), and picks `signer`'s receipts by the receiver
        field, which every receipt holds at the same offset. An endorser needs no more: for
        any `data` that decodes, the claims are exactly those of the decoded block, and a block
        that does not decode can never enter a verified chain, so an endorsement of it vouches
        for nothing. This spares the endorser decoding the other signers' receipts (90 of them
        in a block of 10 transactions with 9 receipts each).
        """
        require_bytes("signer", signer, (PUBLIC_KEY_SIZE,))
        r = Reader(data, cls.TAG)
        r.u64(), r.blob()  # height, prev_hash
        genesis_hash, creator = r.blob(), r.blob()
        r.f64()  # created_at
        mine: list[Receipt] = []
        for _ in range(r.count()):
            r.blob()  # the transaction: not this signer's to vouch for
            for _ in range(r.count()):
                receipt = r.blob()
                if receipt[_RECEIVER_AT] == signer:
                    mine.append(Receipt.decode(receipt))
        r.blob(), r.blob()  # model digest, reputation digest
        signing_end = r.offset
        signature = r.blob()
        signed_end = r.offset
        for _ in range(r.count()):
            r.blob(), r.blob()
        r.finish()
        try:
            claims = Claims(digest(r.data[:signed_end]), signer, tuple(mine), creator,
                            genesis_hash)
        except (TypeError, ValueError) as err:
            raise DecodeError(f"block: {err}") from err
        signed = verify_signature(creator, signature, r.data[:signing_end])
        return replace(claims, creator_signed=signed)


def verify_block(
    block: Block,
    *,
    genesis: Genesis,
    prev_hash: bytes,
    height: int,
    signatures_checked: bool = False,
) -> None:
    """Check a block where it claims to sit; raise the first `ValidationError`, change nothing.

    `height` and `prev_hash` are where the block must go: height 0 follows the genesis, so its
    `prev_hash` is the genesis hash. Checks, in order: genesis, a member creator, height, link,
    the creator's signature; per entry, the transaction's creator, genesis, lifetime and
    signature, a seq used once, and every receipt (for this transaction, by a member, within
    the genesis's ranges, signed, one per receiver); then every endorsement (signed, by a
    receipt signer of this block, so by a member).

    `signatures_checked=True` skips the Ed25519 checks (about 110 for a block of 10
    transactions with 9 receipts each) and keeps every other check. Only for a caller that
    made or verified each signature in the block itself: a node sealing its own block from
    the records it verified when it stored them.
    """
    genesis_hash = genesis.hash
    if block.genesis_hash != genesis_hash:
        raise ValidationError(
            "wrong_genesis", f"block genesis {_short(block.genesis_hash)} is not "
            f"{_short(genesis_hash)}"
        )
    if not genesis.is_member(block.creator):
        raise ValidationError(
            "unknown_sender", f"block creator {_short(block.creator)} is not a member"
        )
    if block.height != height:
        raise ValidationError("bad_height", f"block height {block.height}, expected {height}")
    if block.prev_hash != prev_hash:
        raise ValidationError(
            "broken_link", f"block prev_hash {_short(block.prev_hash)} is not the tip "
            f"{_short(prev_hash)}"
        )
    check = not signatures_checked
    if check:
        block.verify()
    seqs: set[int] = set()
    for i, entry in enumerate(block.entries):
        _verify_entry(i, entry, block.creator, genesis, seqs, check)
    receivers = {r.receiver for r in block.receipts()}
    message = endorsement_message(block.hash)
    for e in block.endorsements:
        if e.signer not in receivers:
            raise ValidationError(
                "bad_endorsement", f"endorser {_short(e.signer)} signed no receipt in this block"
            )
        if check and not verify_signature(e.signer, e.signature, message):
            raise ValidationError(
                "bad_endorsement", f"endorsement by {_short(e.signer)} has a bad signature"
            )


def _verify_entry(
    i: int, entry: BlockEntry, creator: bytes, genesis: Genesis, seqs: set[int], check: bool
) -> None:
    genesis_hash = genesis.hash
    tx = entry.tx
    if tx.creator != creator:
        raise ValidationError(
            "wrong_creator", f"entry {i}: transaction by {_short(tx.creator)} in a block by "
            f"{_short(creator)}"
        )
    if tx.genesis_hash != genesis_hash:
        raise ValidationError("wrong_genesis", f"entry {i}: transaction of another genesis")
    try:
        check_lifetime(tx, genesis)
        if check:
            tx.verify()
    except ValidationError as err:
        raise ValidationError(err.reason, f"entry {i}: {err.detail}") from err
    if tx.seq in seqs:
        raise ValidationError("replayed_seq", f"entry {i}: seq {tx.seq} appears twice")
    seqs.add(tx.seq)
    receivers: set[bytes] = set()
    for j, receipt in enumerate(entry.receipts):
        where = f"entry {i} receipt {j}"
        if receipt.tx_id != tx.tx_id:
            raise ValidationError("bad_receipt", f"{where} is for another transaction")
        try:
            check_receipt_fields(receipt, genesis)
        except ValidationError as err:
            raise ValidationError(err.reason, f"{where}: {err.detail}") from err
        if check and not receipt.has_valid_signature():
            raise ValidationError("bad_receipt", f"{where} is not signed by its receiver")
        if receipt.receiver in receivers:
            raise ValidationError("bad_receipt", f"{where} repeats receiver "
                                  f"{_short(receipt.receiver)}")
        receivers.add(receipt.receiver)


def endorse(
    identity: Identity, block: Block | Claims, issued_receipt_ids: Collection[bytes]
) -> Endorsement:
    """`identity`'s endorsement of `block`, confirming the receipts it holds in `identity`'s name.

    Refuses (`bad_signature`) a block its creator did not sign, and (`bad_endorsement`) one
    that claims a receipt from this signer that is not among `issued_receipt_ids` (the ids of
    receipts it really issued), or holds none from it.
    The endorser vouches for its own receipts only, not for the rest of the block, so the
    block may also be given as its `Claims` on this signer (see `Block.read_claims`).
    """
    claims = block if isinstance(block, Claims) else block.claims(identity.public_key)
    if claims.signer != identity.public_key:
        raise ValueError("the claims are on another signer than the endorsing identity")
    if not claims.creator_signed:
        raise ValidationError("bad_signature", "the block is not signed by its creator")
    mine = claims.receipts
    if not mine:
        raise ValidationError("bad_endorsement", "the block holds no receipt from this signer")
    for receipt in mine:
        if receipt.id not in issued_receipt_ids:
            raise ValidationError(
                "bad_endorsement", f"the block claims receipt {_short(receipt.id)} for tx "
                f"{_short(receipt.tx_id)}, which this signer never issued"
            )
    return Endorsement(identity.public_key, identity.sign(endorsement_message(claims.block_hash)))


def reputation_digest(reputations: Mapping[str, float]) -> bytes:
    """Digest of a reputation table: entries sorted by key, so insertion order does not matter."""
    w = Writer(REPUTATION_TAG).count(len(reputations))
    for key in sorted(reputations):
        w.text(key).f64(reputations[key])
    return digest(w.getvalue())
