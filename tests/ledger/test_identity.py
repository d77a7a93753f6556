"""Identity: deterministic keys, addresses, signatures, key files."""

from __future__ import annotations

import pickle
import stat
from pathlib import Path

import blake3
import pytest

from dfl_ray.ledger import Identity, address_of, short_address, verify_signature
from dfl_ray.ledger.identity import verify_signature_openssl


def test_from_seed_is_deterministic() -> None:
    a = Identity.from_seed(b"\x07" * 32)
    b = Identity.from_seed(b"\x07" * 32)
    assert a.public_key == b.public_key and a == b
    assert a.sign(b"m") == b.sign(b"m")  # Ed25519 signatures are deterministic
    assert Identity.from_seed(b"\x08" * 32).public_key != a.public_key


def test_generate_gives_distinct_keys() -> None:
    assert Identity.generate().public_key != Identity.generate().public_key


def test_address_is_blake3_of_raw_public_key() -> None:
    ident = Identity.from_seed(b"\x01" * 32)
    assert len(ident.public_key) == 32
    expected = blake3.blake3(ident.public_key).hexdigest()
    assert ident.address == address_of(ident.public_key) == expected
    assert len(ident.address) == 64
    assert ident.short_address == short_address(ident.public_key) == expected[:40]


def test_sign_and_verify_round_trip() -> None:
    ident = Identity.from_seed(b"\x02" * 32)
    sig = ident.sign(b"hello")
    assert len(sig) == 64
    assert verify_signature(ident.public_key, sig, b"hello")


def test_rfc8032_test_vector_1() -> None:
    # RFC 8032 section 7.1, TEST 1 (empty message)
    ident = Identity.from_seed(bytes.fromhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert ident.public_key.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = ident.sign(b"")
    assert sig.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
        "1cf9b46bd25bf5f0595bbe24655141438e7a100b")
    assert verify_signature(ident.public_key, sig, b"")


def test_libsodium_and_openssl_agree_on_signatures() -> None:
    ident = Identity.from_seed(b"\x05" * 32)
    for message in (b"", b"block", bytes(range(256)) * 3):
        sig = ident.sign(message)
        assert sig == ident.private_key.sign(message)  # the same deterministic signature
        tampered = bytes([sig[0] ^ 4]) + sig[1:]
        for s_, m in ((sig, message), (tampered, message), (sig, message + b"x")):
            assert verify_signature(ident.public_key, s_, m) == verify_signature_openssl(
                ident.public_key, s_, m)


def test_invalid_signature_is_rejected_without_raising() -> None:
    ident = Identity.from_seed(b"\x02" * 32)
    other = Identity.from_seed(b"\x03" * 32)
    sig = ident.sign(b"hello")
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify_signature(ident.public_key, sig, b"hellp")
    assert not verify_signature(other.public_key, sig, b"hello")
    assert not verify_signature(ident.public_key, flipped, b"hello")
    assert not verify_signature(ident.public_key, sig[:63], b"hello")
    assert not verify_signature(ident.public_key[:31], sig, b"hello")
    assert not verify_signature(b"\xff" * 32, sig, b"hello")  # not a curve point
    assert not verify_signature("key", sig, b"hello")  # type: ignore[arg-type]
    assert not verify_signature(ident.public_key, sig, "hello")  # type: ignore[arg-type]


def test_save_and_load_round_trip_with_owner_only_mode(tmp_path: Path) -> None:
    ident = Identity.from_seed(b"\x04" * 32)
    path = tmp_path / "node.key"
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Identity.load(path)
    assert loaded.public_key == ident.public_key
    assert loaded.sign(b"x") == ident.sign(b"x")


def test_invalid_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        Identity.from_seed(b"\x04" * 32).save(path)
    assert path.read_bytes() == b"precious"


def test_invalid_load_of_a_non_key_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.key"
    path.write_bytes(b"not a key")
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        Identity.load(path)
    with pytest.raises(ValueError, match="cannot read key file"):
        Identity.load(tmp_path / "missing.key")


def test_invalid_seed_length() -> None:
    with pytest.raises(ValueError, match="seed must be 32 bytes"):
        Identity.from_seed(b"\x01" * 31)


def test_identity_pickles_by_seed_and_repr_hides_the_key() -> None:
    ident = Identity.from_seed(b"\x05" * 32)
    copy = pickle.loads(pickle.dumps(ident))
    assert copy == ident and copy.sign(b"m") == ident.sign(b"m")
    assert repr(ident) == "Identity()"
