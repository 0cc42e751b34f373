"""Property tests of the wire messages and the frame decoder (spec: docs/protocol.md).

For every entry of MESSAGE_TYPES: valid messages round-trip through encode and decode with every field
intact; random or mutated bytes raise ProtocolError and nothing else; a stream of frames decodes the same
however it is split; oversize and unknown frames are refused at the header, before any body arrives.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popbench.errors import FrameTooLarge, ProtocolError
from popbench.wire import (
    HEADER,
    HEADER_BYTES,
    MAX_FRAME_BYTES,
    MESSAGE_TYPES,
    BlockRequest,
    BlockResponse,
    Commit,
    CommitAggregate,
    CommitShare,
    Committed,
    Disconnect,
    DisconnectReason,
    FrameDecoder,
    Gossip,
    Hello,
    HelloAck,
    ItemKind,
    ItemsRequest,
    Message,
    NewView,
    PeerAddress,
    Peers,
    PeersRequest,
    Ping,
    Pong,
    PowAnnounce,
    PowBlock,
    PowChain,
    PowGetBlock,
    PowGetChain,
    Prepare,
    PrepareAggregate,
    PrepareShare,
    PrePrepare,
    RejectReason,
    Relayed,
    Role,
    Routed,
    SnapshotChunk,
    SnapshotRequest,
    Status,
    StatusRequest,
    Submit,
    SubmitResult,
    Subscribe,
    ViewChange,
    decode_message,
    encode_frame,
)

# Small sizes keep each example cheap; the layouts do not change with size, only the counts do.
MAX_BLOB_BYTES = 48
MAX_LIST_ITEMS = 4
ROUND_TRIP_EXAMPLES = 60
FUZZ_EXAMPLES = 150
STREAM_EXAMPLES = 25
KNOWN_TYPES = frozenset(cls.TYPE for cls in MESSAGE_TYPES)
UNKNOWN_TYPES = sorted(set(range(256)) - KNOWN_TYPES)

u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
hash32 = st.binary(min_size=32, max_size=32)
signature64 = st.binary(min_size=64, max_size=64)
signature96 = st.binary(min_size=96, max_size=96)
blob = st.binary(max_size=MAX_BLOB_BYTES)
blobs = st.lists(blob, max_size=MAX_LIST_ITEMS)
hashes = st.lists(hash32, max_size=MAX_LIST_ITEMS)
# Surrogates cannot be UTF-8 encoded; a sender never holds them in a text field.
wire_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
item_kind = st.sampled_from(ItemKind)


def _json_values() -> st.SearchStrategy[Any]:
    # orjson carries 64-bit integers and finite floats exactly; NaN and infinity become null.
    scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | wire_text
    scalars |= st.floats(allow_nan=False, allow_infinity=False)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(wire_text, inner, max_size=3),
        max_leaves=8,
    )


def _snapshot_chunk() -> st.SearchStrategy[SnapshotChunk]:
    index_and_count = u32.filter(lambda count: count > 0).flatmap(lambda count: st.tuples(st.integers(0, count - 1), st.just(count)))
    return st.builds(lambda height, ic, data: SnapshotChunk(height, ic[0], ic[1], data), u64, index_and_count, blob)


def _view_change() -> st.SearchStrategy[ViewChange]:
    vote = st.binary(min_size=4 + 64, max_size=4 + 64)
    votes = st.lists(vote, max_size=3).map(b"".join)
    return st.builds(ViewChange, u64, u64, u32, u64, blob, votes, signature64)


def _vote(cls: type[Prepare]) -> st.SearchStrategy[Prepare]:
    return st.builds(cls, u64, u64, hash32, u32, signature96 if issubclass(cls, PrepareShare) else signature64)


PEER_ADDRESS = st.builds(PeerAddress, u32, u8, st.binary(min_size=4, max_size=4), u16)

# One strategy of valid messages per wire type; test_every_message_type_has_a_strategy keeps it complete.
STRATEGIES: dict[type[Message], st.SearchStrategy[Message]] = {
    Hello: st.builds(
        Hello,
        u16,
        hash32,
        u32,
        st.sampled_from(Role),
        st.binary(min_size=33, max_size=33),
        st.binary(min_size=32, max_size=32),
        u16,
        wire_text,
    ),
    HelloAck: st.builds(HelloAck, signature64),
    Ping: st.builds(Ping, u64, u64),
    Pong: st.builds(Pong, u64, u64),
    Disconnect: st.builds(Disconnect, st.sampled_from(DisconnectReason), wire_text),
    Submit: st.builds(Submit, u32, item_kind, blob),
    SubmitResult: st.builds(SubmitResult, u32, hash32, st.sampled_from(RejectReason)),
    Subscribe: st.builds(Subscribe, u8),
    Committed: st.builds(Committed, u64, hash32, u64, u64, hashes, hashes),
    Gossip: st.builds(Gossip, item_kind, blobs),
    ItemsRequest: st.builds(ItemsRequest, item_kind, hashes),
    PrePrepare: st.builds(PrePrepare, u64, u64, blob),
    Prepare: _vote(Prepare),
    Commit: _vote(Commit),
    ViewChange: _view_change(),
    PrepareShare: _vote(PrepareShare),
    CommitShare: _vote(CommitShare),
    PrepareAggregate: st.builds(PrepareAggregate, u64, u64, hash32, blob, signature96),
    CommitAggregate: st.builds(CommitAggregate, u64, u64, hash32, blob, signature96),
    Relayed: st.builds(Relayed, u32, signature64, st.integers(0, 255), blob),
    Routed: st.builds(Routed, u32, u32, signature64, st.integers(0, 255), blob),
    NewView: st.builds(NewView, u64, u64, blobs),
    BlockRequest: st.builds(BlockRequest, u64, u32),
    BlockResponse: st.builds(BlockResponse, blobs),
    SnapshotRequest: st.builds(SnapshotRequest, u64, u32),
    SnapshotChunk: _snapshot_chunk(),
    StatusRequest: st.builds(StatusRequest),
    Status: st.builds(Status, st.dictionaries(wire_text, _json_values(), max_size=4)),
    PeersRequest: st.builds(PeersRequest),
    Peers: st.builds(Peers, st.lists(PEER_ADDRESS, max_size=MAX_LIST_ITEMS)),
    PowAnnounce: st.builds(PowAnnounce, hash32, u64, st.integers(0, 2**128 - 1)),
    PowGetBlock: st.builds(PowGetBlock, hash32),
    PowBlock: st.builds(PowBlock, st.binary(min_size=1, max_size=MAX_BLOB_BYTES)),
    PowGetChain: st.builds(PowGetChain, hashes, u32),
    PowChain: st.builds(PowChain, blobs),
}
ANY_MESSAGE = st.one_of(*STRATEGIES.values())


def field_names(cls: type) -> list[str]:
    """Every slot of ``cls`` and its bases: a subclass such as Pong declares none of its own."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        names.extend(klass.__dict__.get("__slots__", ()))
    return names


def field_values(message: Message) -> dict[str, Any]:
    """The fields of a message as plain data, nested PeerAddress entries included."""
    values = {name: getattr(message, name) for name in field_names(type(message))}
    return {name: _plain(value) for name, value in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Message):
        return field_values(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def round_trip(message: Message) -> Message:
    frame = encode_frame(message)
    length, message_type = HEADER.unpack_from(frame)
    assert (length, message_type) == (len(frame) - HEADER_BYTES, message.TYPE)
    return decode_message(message_type, frame[HEADER_BYTES:])


def decode_or_refuse(message_type: int, body: bytes) -> None:
    """Decode ``body``; a ProtocolError is an acceptable answer, any other exception fails the test."""
    with contextlib.suppress(ProtocolError):
        decode_message(message_type, body)


def feed_or_refuse(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        FrameDecoder().feed(data)


# -- coverage of the type map --------------------------------------------------------------------


def test_every_message_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(MESSAGE_TYPES)


def test_message_type_numbers_are_unique_bytes() -> None:
    numbers = [cls.TYPE for cls in MESSAGE_TYPES]
    assert len(set(numbers)) == len(numbers)
    assert all(0 <= number <= 255 for number in numbers)


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
@settings(deadline=None, max_examples=ROUND_TRIP_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_message_round_trips_with_all_fields(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(STRATEGIES[cls])
    decoded = round_trip(message)
    assert type(decoded) is cls
    assert field_values(decoded) == field_values(message)


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
@settings(deadline=None, max_examples=20)
@given(data=st.data())
def test_messages_that_differ_in_a_field_are_unequal(cls: type[Message], data: st.DataObject) -> None:
    first, second = data.draw(STRATEGIES[cls]), data.draw(STRATEGIES[cls])
    assert (first == second) == (field_values(first) == field_values(second))


# -- malformed input -------------------------------------------------------------------------------


@settings(deadline=None, max_examples=FUZZ_EXAMPLES)
@given(message_type=u8, body=st.binary(max_size=200))
def test_random_bodies_decode_or_raise_protocol_error(message_type: int, body: bytes) -> None:
    decode_or_refuse(message_type, body)


@settings(deadline=None, max_examples=FUZZ_EXAMPLES)
@given(data=st.binary(max_size=300))
def test_random_streams_decode_or_raise_protocol_error(data: bytes) -> None:
    feed_or_refuse(data)


def _mutations(frame: bytes) -> st.SearchStrategy[bytes]:
    positions = st.integers(0, len(frame) - 1)
    flipped = st.tuples(positions, st.integers(1, 255)).map(lambda p: frame[: p[0]] + bytes([frame[p[0]] ^ p[1]]) + frame[p[0] + 1 :])
    truncated = st.integers(0, len(frame) - 1).map(lambda end: frame[:end])
    extended = st.binary(min_size=1, max_size=16).map(lambda tail: frame + tail)
    return st.one_of(flipped, truncated, extended)


@settings(deadline=None, max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_frames_decode_or_raise_protocol_error(data: st.DataObject) -> None:
    frame = encode_frame(data.draw(ANY_MESSAGE))
    mutated = data.draw(_mutations(frame))
    feed_or_refuse(mutated)
    _length, message_type = HEADER.unpack_from(mutated) if len(mutated) >= HEADER_BYTES else (0, 0)
    decode_or_refuse(message_type, mutated[HEADER_BYTES:])


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_body_with_a_trailing_byte_or_one_short_is_refused(cls: type[Message], data: st.DataObject) -> None:
    body = data.draw(STRATEGIES[cls]).encode_body()
    if cls not in (Submit, PrePrepare, PowBlock, Status, Relayed, Routed):  # their last field is "the rest of the body"
        with pytest.raises(ProtocolError):
            decode_message(cls.TYPE, body + b"\x00")
    if body and cls is not Status:
        decode_or_refuse(cls.TYPE, body[:-1])


# -- streams ---------------------------------------------------------------------------------------


def _decode_in_pieces(data: bytes, cuts: list[int]) -> list[Message]:
    decoder = FrameDecoder()
    messages: list[Message] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        messages.extend(decoder.feed(data[start:end]))
    assert decoder.pending_bytes == 0
    return messages


@settings(deadline=None, max_examples=STREAM_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(ANY_MESSAGE, min_size=2, max_size=5))
def test_a_stream_split_at_any_byte_decodes_to_the_same_messages(messages: list[Message]) -> None:
    data = b"".join(encode_frame(message) for message in messages)
    expected = [field_values(message) for message in messages]
    for cut in range(len(data) + 1):
        assert [field_values(m) for m in _decode_in_pieces(data, [cut])] == expected
    one_byte_at_a_time = list(range(1, len(data)))
    assert [field_values(m) for m in _decode_in_pieces(data, one_byte_at_a_time)] == expected


def test_a_partial_frame_is_kept_until_it_completes() -> None:
    frame = encode_frame(Ping(7, 8))
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending_bytes == len(frame) - 1
    assert decoder.feed(frame[-1:] + frame[:3]) == [Ping(7, 8)]
    assert decoder.pending_bytes == 3


# -- refusals at the header ------------------------------------------------------------------------


def test_an_oversize_length_is_refused_from_the_header_alone() -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(HEADER.pack(MAX_FRAME_BYTES + 1, PowBlock.TYPE))


def test_the_maximum_length_waits_for_its_body() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(HEADER.pack(MAX_FRAME_BYTES, PowBlock.TYPE)) == []
    assert decoder.pending_bytes == HEADER_BYTES


def test_an_oversize_header_split_across_feeds_is_refused_once_complete() -> None:
    header = HEADER.pack(2**32 - 1, Ping.TYPE)
    decoder = FrameDecoder()
    assert decoder.feed(header[:2]) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(header[2:])


def test_an_oversize_message_is_refused_on_encode() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(PowBlock(bytes(MAX_FRAME_BYTES + 1)))


@pytest.mark.parametrize("message_type", UNKNOWN_TYPES)
def test_an_unknown_type_is_refused_from_the_header_alone(message_type: int) -> None:
    with pytest.raises(ProtocolError, match="unknown message type"):
        FrameDecoder().feed(HEADER.pack(16, message_type))
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode_message(message_type, b"")


def test_a_feed_holding_a_malformed_frame_delivers_nothing() -> None:
    # The decoder raises for the whole feed and the connection closes, so no frame of it is half-handled.
    data = encode_frame(Ping(1, 2)) + HEADER.pack(0, UNKNOWN_TYPES[0])
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(data)


def test_an_unknown_enum_value_is_a_protocol_error() -> None:
    body = bytes([max(DisconnectReason) + 1, 0])
    with pytest.raises(ProtocolError, match="DisconnectReason"):
        decode_message(Disconnect.TYPE, body)


@pytest.mark.parametrize("detail", ["x" * 1000, "é" * 200, "€" * 100 + "x"], ids=["ascii", "two-byte", "three-byte"])
def test_a_long_disconnect_detail_is_cut_to_fit_its_text_field(detail: str) -> None:
    decoded = round_trip(Disconnect(DisconnectReason.PROTOCOL_ERROR, detail))
    assert isinstance(decoded, Disconnect)
    assert decoded.detail and detail.startswith(decoded.detail)
    assert len(decoded.detail.encode()) <= 255
