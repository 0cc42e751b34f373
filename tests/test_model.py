"""The data model in process: proofs and their checks, transfers, blocks, votes and commit certificates."""

from __future__ import annotations

import pytest

from popbench import crypto
from popbench.errors import ConsensusError, InvalidProof, ProtocolError
from popbench.mining import meets_work
from popbench.model.block import Block, CommitCertificate, vote_message
from popbench.model.proof import MAX_PAYLOAD_BYTES, Proof, check_proof
from popbench.model.transfer import Transfer, TransferKind, check_transfer_signature
from popbench.wire import RejectReason

CHAIN_ID = bytes(range(32))
OTHER_CHAIN_ID = bytes(32)
OWNER = crypto.derive_key("test-model-owner", 0)
MIN_WORK_BITS = 8
SUBMITTED_NS = 1_700_000_000_000_000_000
VALIDATOR_KEYS = [crypto.derive_key("test-model-validators", i) for i in range(4)]
VALIDATORS = {i: key.public_key for i, key in enumerate(VALIDATOR_KEYS)}
QUORUM = 3  # 2f + 1 for n = 4
BLOCK_HASH = bytes([7]) * 32
HEIGHT = 5
VIEW = 2


def make_proof(payload: bytes = b"payload", work_bits: int = MIN_WORK_BITS, chain_id: bytes = CHAIN_ID) -> Proof:
    return Proof.create(OWNER, chain_id, payload, work_bits, 7, SUBMITTED_NS)


def reject_reason(proof: Proof, chain_id: bytes = CHAIN_ID, min_work_bits: int = MIN_WORK_BITS) -> RejectReason:
    with pytest.raises(InvalidProof) as caught:
        check_proof(proof, chain_id, min_work_bits)
    return caught.value.reason  # type: ignore[no-any-return]


def low_work_proof() -> Proof:
    """A signed proof made with no work whose digest misses the network minimum."""
    for index in range(1000):
        proof = make_proof(b"low-%d" % index, work_bits=0)
        if not meets_work(proof.work_digest(), MIN_WORK_BITS):
            return proof
    raise AssertionError("every zero-work proof happened to meet the minimum")


def commit_votes(signers: list[int], view: int = VIEW, block_hash: bytes = BLOCK_HASH) -> list[tuple[int, bytes]]:
    message = vote_message("commit", CHAIN_ID, view, HEIGHT, block_hash)
    return [(signer, VALIDATOR_KEYS[signer].sign(message)) for signer in signers]


def verify_certificate(votes: list[tuple[int, bytes]], view: int = VIEW) -> None:
    CommitCertificate(view, votes).verify(CHAIN_ID, HEIGHT, BLOCK_HASH, VALIDATORS, QUORUM)


def sample_block(proof_ids: list[bytes], transfer_ids: list[bytes]) -> Block:
    return Block(HEIGHT, VIEW, bytes([1]) * 32, 3, SUBMITTED_NS, Block.items_root_of(proof_ids, transfer_ids),
                 bytes([2]) * 32, proof_ids, transfer_ids)  # fmt: skip


# -- proofs -------------------------------------------------------------------------------------------
def test_a_created_proof_passes_its_check_and_carries_the_work_it_claims() -> None:
    proof = make_proof()
    check_proof(proof, CHAIN_ID, MIN_WORK_BITS)
    assert meets_work(proof.work_digest(), MIN_WORK_BITS)


def test_a_proof_round_trips_through_its_encoding_with_the_same_id() -> None:
    proof = make_proof(b"x" * MAX_PAYLOAD_BYTES)
    decoded = Proof.decode(proof.encode())
    assert decoded.encode() == proof.encode()
    assert decoded.id == proof.id
    check_proof(decoded, CHAIN_ID, MIN_WORK_BITS)


def test_a_proof_with_a_broken_signature_is_refused_as_bad_signature() -> None:
    proof = Proof.decode(make_proof().encode())
    proof.signature = bytes([proof.signature[0] ^ 1]) + proof.signature[1:]
    assert reject_reason(proof) == RejectReason.BAD_SIGNATURE


def test_a_proof_signed_by_another_key_is_refused_as_bad_signature() -> None:
    proof = make_proof()
    proof.sign(crypto.derive_key("test-model-owner", 1))
    assert reject_reason(proof) == RejectReason.BAD_SIGNATURE


def test_a_proof_below_the_network_minimum_work_is_refused_as_low_work() -> None:
    proof = low_work_proof()
    check_proof(proof, CHAIN_ID, 0)  # valid apart from its work
    assert reject_reason(proof) == RejectReason.LOW_WORK


def test_a_proof_claiming_more_work_than_it_did_is_refused_as_low_work() -> None:
    proof = make_proof(b"claims more")
    proof.work_bits = 40  # changes its digest too; 40 zero bits by chance has odds 2^-40
    proof.sign(OWNER)
    assert reject_reason(proof) == RejectReason.LOW_WORK


def test_a_proof_for_another_chain_is_refused_as_wrong_chain() -> None:
    assert reject_reason(make_proof(chain_id=OTHER_CHAIN_ID)) == RejectReason.WRONG_CHAIN


def test_the_three_refusals_have_three_distinct_reasons() -> None:
    broken = make_proof()
    broken.signature = bytes(64)
    reasons = {reject_reason(broken), reject_reason(low_work_proof()), reject_reason(make_proof(chain_id=OTHER_CHAIN_ID))}
    assert reasons == {RejectReason.BAD_SIGNATURE, RejectReason.LOW_WORK, RejectReason.WRONG_CHAIN}


def test_the_proof_id_covers_the_signed_fields_but_not_the_signature() -> None:
    proof = make_proof()
    resigned = Proof.decode(proof.encode())
    resigned.signature = bytes(64)
    assert resigned.id == proof.id
    assert make_proof(b"other payload").id != proof.id


@pytest.mark.parametrize("mutate", [lambda b: b[:-1], lambda b: b + b"\x00", lambda b: b[:10]], ids=["short", "long", "stub"])
def test_a_proof_encoding_of_the_wrong_length_is_a_protocol_error(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError):
        Proof.decode(mutate(make_proof().encode()))


def test_a_proof_payload_over_the_maximum_cannot_be_encoded() -> None:
    proof = Proof(CHAIN_ID, OWNER.public_key, 0, 0, 0, b"x" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(ProtocolError):
        proof.encode()


# -- transfers ----------------------------------------------------------------------------------------
def test_a_transfer_round_trips_and_its_signature_checks() -> None:
    transfer = Transfer.create(OWNER, CHAIN_ID, bytes(20), 50, 2, 0, TransferKind.BOND)
    decoded = Transfer.decode(transfer.encode())
    assert (decoded.id, decoded.kind, decoded.amount, decoded.fee) == (transfer.id, TransferKind.BOND, 50, 2)
    check_transfer_signature(decoded, CHAIN_ID)


def test_a_transfer_for_another_chain_or_with_a_bad_signature_is_refused() -> None:
    transfer = Transfer.create(OWNER, CHAIN_ID, bytes(20), 50, 2, 0)
    with pytest.raises(InvalidProof) as caught:
        check_transfer_signature(transfer, OTHER_CHAIN_ID)
    assert caught.value.reason == RejectReason.WRONG_CHAIN
    transfer.amount = 51
    transfer._id = None
    with pytest.raises(InvalidProof) as caught:
        check_transfer_signature(transfer, CHAIN_ID)
    assert caught.value.reason == RejectReason.BAD_SIGNATURE


def test_a_transfer_of_an_unknown_kind_is_a_protocol_error() -> None:
    encoded = bytearray(Transfer.create(OWNER, CHAIN_ID, bytes(20), 1, 0, 0).encode())
    encoded[32 + 33 + 20 + 24] = 9  # the kind byte, after chain id, sender, recipient and three u64s
    with pytest.raises(ProtocolError, match="kind"):
        Transfer.decode(bytes(encoded))


# -- blocks -------------------------------------------------------------------------------------------
def test_a_block_round_trips_through_its_encoding_with_the_same_hash() -> None:
    block = sample_block([make_proof().id, make_proof(b"2").id], [bytes([9]) * 32])
    decoded = Block.decode(block.encode())
    assert decoded.hash == block.hash
    assert decoded.header_bytes() == block.header_bytes()
    assert (decoded.proof_ids, decoded.transfer_ids) == (block.proof_ids, block.transfer_ids)


def test_an_empty_block_round_trips() -> None:
    block = sample_block([], [])
    assert Block.decode(block.encode()).hash == block.hash


HEADER_FIELDS = ("height", "view", "prev_hash", "proposer", "timestamp_ns", "items_root", "state_root")


def with_field(block: Block, name: str) -> Block:
    """A copy of ``block`` with one header field changed."""
    values = {field: getattr(block, field) for field in (*HEADER_FIELDS, "proof_ids", "transfer_ids")}
    value = values[name]
    values[name] = value + 1 if isinstance(value, int) else bytes([value[0] ^ 1]) + value[1:]
    return Block(**values)


@pytest.mark.parametrize("name", HEADER_FIELDS)
def test_the_block_hash_commits_to_every_header_field(name: str) -> None:
    block = sample_block([], [])
    assert with_field(block, name).hash != block.hash


def test_the_items_root_depends_on_the_ids_and_their_order() -> None:
    a, b = bytes([1]) * 32, bytes([2]) * 32
    assert Block.items_root_of([a, b], []) != Block.items_root_of([b, a], [])
    assert Block.items_root_of([a], []) != Block.items_root_of([a, b], [])


@pytest.mark.parametrize("mutate", [lambda b: b + b"\x00", lambda b: b[:-1]], ids=["trailing", "truncated"])
def test_a_malformed_block_encoding_is_a_protocol_error(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError):
        Block.decode(mutate(sample_block([bytes(32)], []).encode()))


# -- votes and commit certificates ---------------------------------------------------------------------
def test_vote_messages_are_separated_by_kind_chain_view_height_and_block() -> None:
    base = ("commit", CHAIN_ID, VIEW, HEIGHT, BLOCK_HASH)
    variants = [("prepare", *base[1:]), ("view-change", *base[1:]), ("commit", OTHER_CHAIN_ID, *base[2:]),
                ("commit", CHAIN_ID, VIEW + 1, HEIGHT, BLOCK_HASH), ("commit", CHAIN_ID, VIEW, HEIGHT + 1, BLOCK_HASH),
                ("commit", CHAIN_ID, VIEW, HEIGHT, bytes(32))]  # fmt: skip
    messages = {vote_message(*base), *(vote_message(*variant) for variant in variants)}
    assert len(messages) == 1 + len(variants)


def test_an_unknown_vote_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="vote kind"):
        vote_message("precommit", CHAIN_ID, VIEW, HEIGHT, BLOCK_HASH)


def test_a_certificate_with_a_quorum_of_distinct_validators_verifies() -> None:
    verify_certificate(commit_votes([0, 2, 3]))
    verify_certificate(commit_votes([0, 1, 2, 3]))


def test_a_certificate_round_trips_through_its_encoding_and_still_verifies() -> None:
    certificate = CommitCertificate(VIEW, commit_votes([3, 1, 0]))
    decoded = CommitCertificate.decode(certificate.encode())
    assert (decoded.view, decoded.votes) == (certificate.view, certificate.votes)
    decoded.verify(CHAIN_ID, HEIGHT, BLOCK_HASH, VALIDATORS, QUORUM)


def test_a_certificate_below_quorum_is_refused() -> None:
    with pytest.raises(ConsensusError, match="quorum"):
        verify_certificate(commit_votes([0, 1]))


def test_a_certificate_with_a_repeated_signer_is_refused_even_with_enough_votes() -> None:
    votes = commit_votes([0, 1, 1])
    with pytest.raises(ConsensusError, match="repeated"):
        verify_certificate(votes)


def test_a_certificate_vote_from_a_non_validator_is_refused() -> None:
    outsider = crypto.derive_key("test-model-outsider", 0)
    message = vote_message("commit", CHAIN_ID, VIEW, HEIGHT, BLOCK_HASH)
    with pytest.raises(ConsensusError, match="unknown"):
        verify_certificate([*commit_votes([0, 1, 2]), (9, outsider.sign(message))])


def test_a_certificate_signature_over_another_view_or_kind_is_refused() -> None:
    with pytest.raises(ConsensusError, match="does not verify"):
        verify_certificate(commit_votes([0, 1, 2], view=VIEW + 1))
    prepare = vote_message("prepare", CHAIN_ID, VIEW, HEIGHT, BLOCK_HASH)
    with pytest.raises(ConsensusError, match="does not verify"):
        verify_certificate([*commit_votes([0, 1]), (2, VALIDATOR_KEYS[2].sign(prepare))])


def test_a_certificate_whose_count_does_not_match_its_length_is_a_protocol_error() -> None:
    encoded = CommitCertificate(VIEW, commit_votes([0, 1, 2])).encode()
    with pytest.raises(ProtocolError):
        CommitCertificate.decode(encoded[:-1])
    with pytest.raises(ProtocolError):
        CommitCertificate.decode(encoded[:5])
