"""A node's Ed25519 identity: key pair, BLAKE3 address, signing, and key files on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import CryptoError

from dfl_ray.ledger.hashing import digest

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
SHORT_ADDRESS_BYTES = 20


def address_of(public_key: bytes) -> str:
    """Full address: hex of the 32-byte BLAKE3 digest of the raw public key."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"public key must be {PUBLIC_KEY_SIZE} bytes")
    return digest(public_key).hex()


def short_address(public_key: bytes) -> str:
    """Display form of an address: its first 20 bytes in hex."""
    return address_of(public_key)[: 2 * SHORT_ADDRESS_BYTES]


def verify_signature(pubkey: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is `pubkey`'s Ed25519 signature of `message`; never raises.

    Runs in libsodium (PyNaCl), which verifies faster than OpenSSL (`verify_signature_openssl`;
    `benchmarks/ledger_bench.py` times both), and a node verifies a signature for every
    transaction and receipt it takes in. libsodium is also the stricter: it refuses small-order
    public keys and non-canonical encodings, which no honest key produces.
    """
    if not (
        isinstance(pubkey, bytes)
        and isinstance(signature, bytes)
        and isinstance(message, bytes)
        and len(pubkey) == PUBLIC_KEY_SIZE
        and len(signature) == SIGNATURE_SIZE
    ):
        return False
    try:
        crypto_sign_open(signature + message, pubkey)
    except CryptoError:  # a bad signature, or 32 bytes that are not a valid public key
        return False
    return True


def verify_signature_openssl(pubkey: bytes, signature: bytes, message: bytes) -> bool:
    """`verify_signature` through OpenSSL (`cryptography`), for comparison in benchmarks."""
    try:
        Ed25519PublicKey.from_public_bytes(pubkey).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, eq=False)
class Identity:
    """An Ed25519 private key with its public key and address. The repr never shows the key.

    Ed25519: Bernstein, Duif, Lange, Schwabe, Yang, "High-speed high-security signatures"
    (CHES 2011); RFC 8032. Signatures are deterministic, so the same key and message always
    give the same 64 bytes. Signing runs in libsodium; key files stay PKCS#8 PEM through
    `cryptography`.

    Two identities are equal when their public keys are (key objects compare by identity).
    """

    private_key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed (reproducible simulations)."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise ValueError(f"seed must be {SEED_SIZE} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a private key written by `save` (unencrypted PKCS#8 PEM)."""
        path = Path(path)
        try:
            pem = path.read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read key file {path}: {err}") from err
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path} is not an unencrypted PEM private key: {err}") from err
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the private key to a new file readable by its owner only (mode 0600).

        Refuses to overwrite: losing a node's key loses the ability to extend its chain.
        """
        path = Path(path)
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # O_EXCL makes "refuse to overwrite" atomic; the mode is set at creation so the key
        # is never readable by others, not even for a moment.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as err:
            raise FileExistsError(f"refusing to overwrite existing key file {path}") from err
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    @cached_property
    def public_key(self) -> bytes:
        """The 32-byte raw public key."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @cached_property
    def address(self) -> str:
        return address_of(self.public_key)

    @property
    def short_address(self) -> str:
        return short_address(self.public_key)

    @cached_property
    def _secret(self) -> bytes:
        """libsodium's 64-byte secret key (seed and public key) for signing."""
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return crypto_sign_seed_keypair(seed)[1]

    def sign(self, message: bytes) -> bytes:
        """64-byte Ed25519 signature of `message`."""
        if not isinstance(message, bytes):
            raise TypeError(f"message must be bytes, got {type(message).__name__}")
        return crypto_sign(message, self._secret)[:SIGNATURE_SIZE]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self.public_key == other.public_key

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        # Key objects do not pickle; identities cross process boundaries as their seed.
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return (Identity.from_seed, (seed,))
