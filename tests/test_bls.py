"""BLS shares, aggregates, bitmaps and the genesis's proofs of possession (popbench/bls.py, popbench/genesis.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from blspy import G1Element, PopSchemeMPL

from popbench import bls, crypto
from popbench.errors import ConfigError, ConsensusError, ProtocolError
from popbench.genesis import VOTES_COLLECTOR, ChainParams, Genesis, ValidatorInfo, load_genesis, make_genesis, write_genesis
from popbench.model.block import AggregateCertificate, CommitCertificate, decode_certificate, vote_message

MESSAGE = b"popbench/vote/v1/prepare/" + bytes(32) + bytes(16) + bytes(32)


def _keys(count: int) -> list[bls.BlsSecretKey]:
    return [bls.bls_key_from_secret(crypto.derive_key("bls-test", i).secret) for i in range(count)]


def test_a_share_verifies_for_its_key_and_message_only() -> None:
    keys = _keys(2)
    table = bls.BlsKeyTable([k.public_key for k in keys])
    share = keys[0].sign(MESSAGE)
    assert len(share) == bls.SIGNATURE_BYTES and len(keys[0].public_key) == bls.PUBLIC_KEY_BYTES
    assert table.verify_share(0, MESSAGE, share)
    assert not table.verify_share(1, MESSAGE, share)
    assert not table.verify_share(0, MESSAGE + b"x", share)
    assert not table.verify_share(0, MESSAGE, bytes(96))  # not a point: False, never an exception
    assert not table.verify_share(0, MESSAGE, share[:95])
    assert not table.verify_share(7, MESSAGE, share)


def test_the_key_is_reproducible_from_the_ecdsa_secret() -> None:
    secret = crypto.derive_key("bls-test", 3).secret
    assert bls.bls_key_from_secret(secret).public_key == bls.bls_key_from_secret(secret).public_key
    assert bls.bls_key_from_secret(secret).public_key != bls.bls_key_from_secret(bytes(31) + b"\x01").public_key


def test_an_aggregate_verifies_for_exactly_its_signers() -> None:
    keys = _keys(5)
    table = bls.BlsKeyTable([k.public_key for k in keys])
    total = bls.aggregate(keys[i].sign(MESSAGE) for i in (0, 2, 3))
    assert total is not None
    assert table.verify_aggregate([0, 2, 3], MESSAGE, total)
    assert not table.verify_aggregate([0, 2], MESSAGE, total)  # a signer left out of the bitmap
    assert not table.verify_aggregate([0, 2, 3, 4], MESSAGE, total)  # a signer claimed who did not sign
    assert not table.verify_aggregate([0, 2, 3], MESSAGE + b"x", total)
    assert not table.verify_aggregate([], MESSAGE, total)
    assert bls.aggregate([keys[0].sign(MESSAGE), bytes(96)]) is None  # a malformed share spoils the sum
    assert bls.aggregate([]) is None


def test_bitmaps_name_genesis_positions_most_significant_bit_first() -> None:
    assert bls.signers_bitmap([0, 2, 3], 4) == bytes([0b10110000])
    assert bls.signers_bitmap([0, 8], 9) == bytes([0x80, 0x80])
    assert bls.bitmap_signers(bytes([0x80, 0x80]), 9) == [0, 8]
    with pytest.raises(ProtocolError, match="beyond"):
        bls.bitmap_signers(bytes([0x80, 0x40]), 9)  # bit 9 of a 9-validator set
    with pytest.raises(ProtocolError, match="bytes"):
        bls.bitmap_signers(bytes([0x80]), 9)
    with pytest.raises(ValueError):
        bls.signers_bitmap([9], 9)


# -- the genesis ---------------------------------------------------------------------------------------
def test_a_collector_genesis_carries_every_validators_bls_key_and_pop_and_reads_back(tmp_path: Path) -> None:
    genesis, keys = make_genesis(4, seed="bls", params=ChainParams(votes=VOTES_COLLECTOR))
    for v, key in zip(genesis.validators, keys, strict=True):
        assert v.bls_public_key == bls.bls_key_from_secret(key.secret).public_key
        assert bls.verify_possession(v.bls_public_key, v.bls_pop)
    write_genesis(genesis, tmp_path / "genesis.json")
    assert load_genesis(tmp_path / "genesis.json").chain_id == genesis.chain_id
    assert genesis.params.vote_path == "collector"


def test_a_genesis_without_bls_keys_keeps_its_chain_id() -> None:
    """The BLS fields and the vote parameters appear only when used: older genesis files keep their id."""
    genesis, _ = make_genesis(4, seed="bls")
    text = json.dumps(genesis.to_json_dict())
    assert "bls" not in text and "votes" not in text and "collector" not in text
    assert genesis.params.vote_path == "all-to-all"


def _rewrite(path: Path, change: dict[str, object], index: int = 1) -> None:
    data = json.loads(path.read_text())
    data["validators"][index].update(change)
    path.write_text(json.dumps(data))


def test_a_genesis_key_without_a_valid_proof_of_possession_is_refused(tmp_path: Path) -> None:
    genesis, _ = make_genesis(4, seed="bls", params=ChainParams(votes=VOTES_COLLECTOR))
    path = tmp_path / "genesis.json"
    write_genesis(genesis, path)
    _rewrite(path, {"bls_pop": genesis.validators[2].bls_pop.hex()})  # another validator's proof
    with pytest.raises(ConfigError, match=r"genesis.json: validators: the BLS key of validator 1 has no valid proof of possession"):
        load_genesis(path)
    write_genesis(genesis, path)
    _rewrite(path, {"bls_pop": "00" * 96})
    with pytest.raises(ConfigError, match="proof of possession"):
        load_genesis(path)


def test_a_rogue_key_is_refused() -> None:
    """The rogue-key attack: validator 3 publishes pk_evil - pk_0 - pk_1 - pk_2, so the "aggregate" of
    all four keys is pk_evil and it alone could sign for a quorum. It knows no secret for that key, so it
    can give no proof of possession; the genesis is refused."""
    genesis, _ = make_genesis(4, seed="bls", params=ChainParams(votes=VOTES_COLLECTOR))
    evil = bls.bls_key_from_secret(b"\x07" * 32)
    rogue_point = G1Element.from_bytes(evil.public_key)
    for v in genesis.validators[:3]:
        rogue_point = rogue_point + G1Element.from_bytes(v.bls_public_key).negate()
    rogue = bytes(rogue_point)
    assert PopSchemeMPL.fast_aggregate_verify(
        [G1Element.from_bytes(v.bls_public_key) for v in genesis.validators[:3]] + [rogue_point], MESSAGE,
        PopSchemeMPL.sign(evil._secret, MESSAGE),  # the attack works on keys without proofs
    )  # fmt: skip
    forged = ValidatorInfo(3, genesis.validators[3].public_key, 10_000, rogue, evil.prove_possession())
    with pytest.raises(ConfigError, match="validator 3 has no valid proof of possession"):
        Genesis("rogue", (*genesis.validators[:3], forged), params=genesis.params)


def test_the_collector_path_needs_a_bls_key_for_every_validator(tmp_path: Path) -> None:
    plain, _ = make_genesis(4, seed="bls")
    with pytest.raises(ConfigError, match=r"params\.votes: the collector vote path needs a BLS key"):
        Genesis("x", plain.validators, params=ChainParams(votes=VOTES_COLLECTOR))
    genesis, _ = make_genesis(4, seed="bls", params=ChainParams(votes=VOTES_COLLECTOR))
    path = tmp_path / "genesis.json"
    write_genesis(genesis, path)
    data = json.loads(path.read_text())
    del data["validators"][0]["bls_pop"]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"validators\[0\]: bls_public_key and bls_pop come together"):
        load_genesis(path)


@pytest.mark.parametrize(("field", "value"), [("votes", 2), ("collectors", 0), ("collector_timeout_ms", 0)])
def test_vote_path_parameters_are_checked(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"params.{field}"):
        ChainParams(**{field: value})


# -- aggregate certificates (popbench/model/block.py) ------------------------------------------------------
def _aggregate_certificate(signers: list[int], kind: str = "commit", view: int = 2) -> tuple[Genesis, AggregateCertificate]:
    genesis, keys = make_genesis(4, seed="bls", params=ChainParams(votes=VOTES_COLLECTOR))
    message = vote_message(kind, genesis.chain_id, view, 5, BLOCK_HASH)
    shares = [bls.bls_key_from_secret(keys[i].secret).sign(message) for i in signers]
    total = bls.aggregate(shares)
    assert total is not None
    return genesis, AggregateCertificate(view, bls.signers_bitmap(signers, 4), total)


BLOCK_HASH = bytes(range(32))


def test_an_aggregate_certificate_of_a_quorum_checks_and_round_trips() -> None:
    genesis, certificate = _aggregate_certificate([0, 1, 3])
    certificate.check(genesis, 5, BLOCK_HASH)
    decoded = decode_certificate(certificate.encode())
    assert isinstance(decoded, AggregateCertificate) and decoded.encode() == certificate.encode()
    assert decoded.signer_ids(genesis) == [0, 1, 3]
    assert len(certificate.encode()) == 8 + 4 + 4 + 1 + 96


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: AggregateCertificate(c.view, bls.signers_bitmap([0, 1, 2, 3], 4), c.aggregate), "does not verify"),  # forged bitmap
        (lambda c: AggregateCertificate(c.view, bls.signers_bitmap([0, 1], 4), c.aggregate), "2 signers, quorum is 3"),
        (lambda c: AggregateCertificate(c.view + 1, c.signers, c.aggregate), "does not verify"),  # another view
        (lambda c: AggregateCertificate(c.view, c.signers, bytes(96)), "does not verify"),  # not a point
        (lambda c: AggregateCertificate(c.view, b"\xf0\x00", c.aggregate), "bitmap"),
    ],
)
def test_an_aggregate_certificate_that_lies_is_refused(change: Callable[[AggregateCertificate], AggregateCertificate], reason: str) -> None:
    genesis, certificate = _aggregate_certificate([0, 1, 3])
    with pytest.raises(ConsensusError, match=reason):
        change(certificate).check(genesis, 5, BLOCK_HASH)
    with pytest.raises(ConsensusError, match="does not verify"):
        certificate.check(genesis, 6, BLOCK_HASH)  # another height
    with pytest.raises(ConsensusError, match="does not verify"):
        certificate.check(genesis, 5, BLOCK_HASH, kind="prepare")  # a COMMIT aggregate is no PREPARE one


def test_a_chain_accepts_only_its_own_vote_paths_certificates() -> None:
    genesis, certificate = _aggregate_certificate([0, 1, 3])
    plain, _ = make_genesis(4, seed="bls")
    with pytest.raises(ConsensusError, match="list of signatures"):
        certificate.check(plain, 5, BLOCK_HASH)
    with pytest.raises(ConsensusError, match="aggregate signatures"):
        CommitCertificate(2, []).check(genesis, 5, BLOCK_HASH)
    assert isinstance(decode_certificate(CommitCertificate(2, []).encode()), CommitCertificate)


# -- docs/protocol.md section 14.4, recomputed --------------------------------------------------------------
def test_the_collector_path_test_vectors_of_the_protocol_spec() -> None:
    from popbench.wire import PrepareAggregate, PrepareShare

    spec = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    section = spec[spec.index("### 14.4 Test vectors") :]
    keys = [bls.bls_key_from_secret(s.to_bytes(32, "big")) for s in (1, 2, 3)]
    chain_id, block_hash = b"\xaa" * 32, b"\xbb" * 32
    message = vote_message("prepare", chain_id, 0, 1, block_hash)
    assert len(message) == 105 and message.startswith(bytes.fromhex("706f7062656e63682f766f74652f76312f707265706172652f"))
    share = keys[0].sign(message)
    total = bls.aggregate(k.sign(message) for k in keys)
    assert total is not None
    certificate = AggregateCertificate(0, bls.signers_bitmap([0, 1, 2], 4), total)
    head = bytes(16 - 1) + b"\x01" + block_hash
    for value in (*(k.public_key for k in keys), keys[0].prove_possession(), share, total):
        assert value.hex() in section
    assert PrepareShare(0, 1, block_hash, 0, share).encode_body() == head + bytes(4) + share
    assert PrepareAggregate(0, 1, block_hash, b"\xe0", total).encode_body() == head + bytes.fromhex("00000001e0") + total
    assert certificate.encode() == bytes.fromhex("0000000000000000ffffffff00000001e0") + total
    assert "0000000000000000ffffffff00000001e0" in section and "`00000001e0`" in section
