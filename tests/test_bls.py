"""BLS shares, aggregates, bitmaps and the genesis's proofs of possession (popbench/bls.py, popbench/genesis.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from blspy import G1Element, PopSchemeMPL

from popbench import bls, crypto
from popbench.errors import ConfigError, ProtocolError
from popbench.genesis import VOTES_COLLECTOR, ChainParams, Genesis, ValidatorInfo, load_genesis, make_genesis, write_genesis

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
