"""The genesis file: validators, stakes, balances and chain parameters; its hash is the chain id.

The file is JSON (format: docs/genesis.md). It holds no private keys: ``popbench genesis`` writes them to
a separate keys file, reproducible from the seed (a benchmark network, not a production one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from math import gcd
from pathlib import Path
from typing import Any

from popbench import bls, crypto
from popbench.errors import ConfigError
from popbench.kinds import VotePath
from popbench.model.hashing import address_of

MAX_SCHEDULE_SLOTS = 10_000  # stakes are scaled down until one rotation fits in this many slots
MAX_NODE_ID = 2**32 - 1  # a node id travels as a u32 (HELLO, votes, certificates)
MAX_AMOUNT = 2**64 - 1  # balances and stakes are u64 in the state's account records (docs/protocol.md)
VOTES_ALL_TO_ALL = 0
VOTES_COLLECTOR = 1
VOTE_PATHS = {VotePath.ALL_TO_ALL.value: VOTES_ALL_TO_ALL, VotePath.COLLECTOR.value: VOTES_COLLECTOR}  # by the profile's names


@dataclass(frozen=True)
class ChainParams:
    """Consensus and economics of a chain; every field is validated on load."""

    batch_size: int = 500  # items per block at most
    batch_interval_ms: int = 50  # a leader with items waits at most this long for a fuller batch
    view_timeout_ms: int = 2000  # first view timeout; doubles per failed view in a row
    view_timeout_max_ms: int = 30000
    min_stake: int = 1000
    min_work_bits: int = 8  # leading zero bits every proof's work digest must have at least
    reward_per_proof: int = 1
    block_reward: int = 10
    validator_reward: int = 1
    epoch_length: int = 100  # blocks per epoch (validator-set changes, designed: docs/consensus.md)
    mempool_limit: int = 50_000  # items; SUBMIT answers BUSY beyond it
    pow_block_interval_ms: int = 2000
    pow_retarget_blocks: int = 10
    pow_initial_work_bits: int = 16
    # 1: leader reputation (popbench/pop/leaders.py); 0: plain rotation, leader_for_view(v + h) (wave 2)
    leader_reputation: int = 1
    # How PREPARE and COMMIT travel (docs/consensus.md): 0 all-to-all ECDSA votes; 1 BLS shares to the
    # view's collectors, who send back aggregate certificates (every validator then needs a BLS key).
    votes: int = VOTES_ALL_TO_ALL
    collectors: int = 2  # collectors per view (c + 1): the view's leader and the next leaders of the schedule
    collector_timeout_ms: int = 1000  # no certificate this long after a share: vote all-to-all in that view

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"must be a non-negative integer, got {value!r}", key=f"params.{item.name}")
        for name in ("batch_size", "batch_interval_ms", "view_timeout_ms", "mempool_limit", "epoch_length",
                     "pow_block_interval_ms", "pow_retarget_blocks"):  # fmt: skip
            if getattr(self, name) == 0:
                raise ConfigError("must be at least 1", key=f"params.{name}")
        if self.leader_reputation > 1:
            raise ConfigError("must be 0 (plain rotation) or 1 (leader reputation)", key="params.leader_reputation")
        if self.votes > VOTES_COLLECTOR:
            raise ConfigError("must be 0 (all-to-all votes) or 1 (collectors)", key="params.votes")
        for name in ("collectors", "collector_timeout_ms"):
            if getattr(self, name) == 0:
                raise ConfigError("must be at least 1", key=f"params.{name}")
        if self.min_work_bits > 64 or self.pow_initial_work_bits > 64:
            raise ConfigError("work bits above 64 are not minable here", key="params.min_work_bits")

    @property
    def vote_path(self) -> str:
        """The vote path's name, as a profile spells it."""
        return next(name for name, value in VOTE_PATHS.items() if value == self.votes)


@dataclass(frozen=True)
class ValidatorInfo:
    node_id: int
    public_key: bytes
    stake: int
    bls_public_key: bytes = b""  # 48 bytes, with its proof of possession (96 bytes); empty: no BLS key
    bls_pop: bytes = b""

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)


@dataclass(frozen=True)
class Genesis:
    chain_name: str
    validators: tuple[ValidatorInfo, ...]
    balances: Mapping[bytes, int] = field(default_factory=dict)
    params: ChainParams = field(default_factory=ChainParams)

    def __post_init__(self) -> None:
        if not self.validators:
            raise ConfigError("a genesis needs at least one validator", key="validators")
        ids = [v.node_id for v in self.validators]
        keys = [v.public_key for v in self.validators]
        if len(set(ids)) != len(ids) or len(set(keys)) != len(keys):
            raise ConfigError("validator ids and keys must be unique", key="validators")
        for v in self.validators:
            if v.stake < self.params.min_stake:
                raise ConfigError(
                    f"stake {v.stake} of validator {v.node_id} is below the minimum {self.params.min_stake}", key="validators"
                )
        self._check_bls_keys()

    def _check_bls_keys(self) -> None:
        """Every BLS key proves possession of its secret (rogue keys: popbench/bls.py); the collector path
        needs one per validator. A PoP costs a pairing check (~2 ms): done once, where the genesis is made or read."""
        keyed = [v for v in self.validators if v.bls_public_key]
        if len({v.bls_public_key for v in keyed}) != len(keyed):
            raise ConfigError("validator BLS keys must be unique", key="validators")
        if self.params.votes == VOTES_COLLECTOR and len(keyed) != len(self.validators):
            raise ConfigError("the collector vote path needs a BLS key (and its proof of possession) for every validator",
                              key="params.votes")  # fmt: skip
        for v in keyed:
            if not bls.verify_possession(v.bls_public_key, v.bls_pop):
                raise ConfigError(f"the BLS key of validator {v.node_id} has no valid proof of possession", key="validators")

    # -- identity ----------------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        return {
            "chain_name": self.chain_name,
            "validators": [_validator_json(v) for v in self.validators],
            "balances": {address.hex(): amount for address, amount in sorted(self.balances.items())},
            "params": canonical_params(self.params),
        }

    @cached_property
    def chain_id(self) -> bytes:
        canonical = json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(canonical).digest()

    # -- validator set -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        # n - f, not 2f + 1: the two agree only when n = 3f + 1. For other n, 2f + 1 lets two quorums
        # share fewer than f + 1 validators (n = 6: f = 1, two quorums of 3 can be disjoint).
        return self.n - self.f

    @cached_property
    def public_keys(self) -> dict[int, bytes]:
        return {v.node_id: v.public_key for v in self.validators}

    @cached_property
    def _by_id(self) -> dict[int, ValidatorInfo]:
        return {v.node_id: v for v in self.validators}

    def validator(self, node_id: int) -> ValidatorInfo:
        return self._by_id[node_id]

    @cached_property
    def index_of(self) -> dict[int, int]:
        """node id -> its position in the genesis list: its bit in a certificate's signer bitmap."""
        return {v.node_id: index for index, v in enumerate(self.validators)}

    @cached_property
    def bls_keys(self) -> bls.BlsKeyTable:
        """The validators' BLS keys as points, in genesis order (CryptoError if a validator has none)."""
        return bls.BlsKeyTable([v.bls_public_key for v in self.validators])

    @cached_property
    def leader_schedule(self) -> tuple[int, ...]:
        """Smooth weighted round-robin over the stakes: with equal stakes, plain round-robin."""
        stakes = _scaled_stakes([v.stake for v in self.validators])
        current = [0] * self.n
        total = sum(stakes)
        schedule = []
        for _ in range(total):
            current = [c + s for c, s in zip(current, stakes, strict=True)]
            chosen = max(range(self.n), key=lambda i: (current[i], -i))
            current[chosen] -= total
            schedule.append(self.validators[chosen].node_id)
        return tuple(schedule)

    def leader_for_view(self, view: int) -> int:
        schedule = self.leader_schedule
        return schedule[view % len(schedule)]


def _validator_json(v: ValidatorInfo) -> dict[str, Any]:
    # The BLS fields appear only when present: a genesis without them keeps its bytes and chain id.
    entry: dict[str, Any] = {"node_id": v.node_id, "public_key": v.public_key.hex(), "stake": v.stake}
    if v.bls_public_key:
        entry.update(bls_public_key=v.bls_public_key.hex(), bls_pop=v.bls_pop.hex())
    return entry


def _scaled_stakes(stakes: list[int]) -> list[int]:
    divisor = 0
    for stake in stakes:
        divisor = gcd(divisor, stake)
    scaled = [stake // divisor for stake in stakes]
    # Floor, not round: rounding can give the same total back and loop forever (e.g. 24643, 27274,
    # 8496, 20370 -> 10,001 slots each pass). Floor shrinks every stake >= 2, so this ends.
    while sum(scaled) > MAX_SCHEDULE_SLOTS and max(scaled) > 1:  # keep every validator at least one slot
        total = sum(scaled)
        scaled = [max(1, s * MAX_SCHEDULE_SLOTS // total) for s in scaled]
    return scaled


# -- making, reading and writing ----------------------------------------------------------------------
def make_genesis(count: int, seed: str = "popbench", stake: int = 10_000, balance: int = 1_000_000,
                 params: ChainParams | None = None, chain_name: str = "popbench-bench",
                 bls_keys: bool | None = None) -> tuple[Genesis, list[crypto.SigningKey]]:  # fmt: skip
    """A reproducible genesis of ``count`` validators; validator i's key is ``derive_key(seed, i)``.

    Validators get BLS keys (derived from their ECDSA secrets) when the parameters choose the collector
    vote path, or when ``bls`` asks for them; otherwise the genesis is exactly what it was before BLS.
    """
    if count < 1:
        raise ConfigError("at least one validator", key="--count")
    params = params or ChainParams()
    with_bls = params.votes == VOTES_COLLECTOR if bls_keys is None else bls_keys
    keys = [crypto.derive_key(seed, index) for index in range(count)]
    validators = tuple(_new_validator(index, key, stake, with_bls) for index, key in enumerate(keys))
    balances = {v.address: balance for v in validators}
    return Genesis(chain_name, validators, balances, params), keys


def _new_validator(node_id: int, key: crypto.SigningKey, stake: int, with_bls: bool) -> ValidatorInfo:
    if not with_bls:
        return ValidatorInfo(node_id, key.public_key, stake)
    secret = bls.bls_key_from_secret(key.secret)
    return ValidatorInfo(node_id, key.public_key, stake, secret.public_key, secret.prove_possession())


def genesis_from_dict(data: Any, source: str) -> Genesis:
    if not isinstance(data, dict):
        raise ConfigError("a genesis file must be a JSON object", source=source)
    _check_keys(data, {"chain_name", "validators", "balances", "params"}, "", source)
    params = _params(data.get("params", {}), source)
    validators = tuple(_validator(entry, i, source) for i, entry in enumerate(_list(data, "validators", source)))
    if not isinstance(data.get("balances", {}), dict):
        raise ConfigError("must be an object of address: amount", key="balances", source=source)
    balances = {
        _hex(k, f"balances.{k}", source, 20): _int(v, f"balances.{k}", source, MAX_AMOUNT) for k, v in data.get("balances", {}).items()
    }
    try:
        return Genesis(_chain_name(data.get("chain_name", "popbench"), source), validators, balances, params)
    except ConfigError as err:
        raise ConfigError(str(err), source=source) from err


def load_genesis(path: Path) -> Genesis:
    return genesis_from_dict(_read_json(path), str(path))


def write_genesis(genesis: Genesis, path: Path) -> None:
    path.write_text(json.dumps(genesis.to_json_dict(), indent=2, sort_keys=True) + "\n")


def write_keys(keys: list[crypto.SigningKey], path: Path) -> None:
    text = json.dumps({str(i): key.secret.hex() for i, key in enumerate(keys)}, indent=2) + "\n"
    # Created 0600, so the secrets are never readable by others, not even between write and chmod.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT
        out.write(text)


def load_keys(path: Path) -> dict[int, crypto.SigningKey]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConfigError("a keys file maps node ids to secret keys", source=str(path))
    for node_id in data:
        if not node_id.isdecimal():
            raise ConfigError("a node id must be a non-negative integer", key=node_id, source=str(path))
    return {int(node_id): crypto.SigningKey(_hex(secret, node_id, str(path), 32)) for node_id, secret in data.items()}


def genesis_from_validators_file(path: Path, params: ChainParams | None = None) -> Genesis:
    data = _read_json(path)
    entries = data.get("validators") if isinstance(data, dict) else data
    wrapped = {"validators": entries, "params": dataclasses.asdict(params or ChainParams())}
    if isinstance(data, dict):
        wrapped.update({k: v for k, v in data.items() if k != "validators"})
    return genesis_from_dict(wrapped, str(path))


# -- validation helpers ---------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read JSON: {err}", source=str(path)) from err


def _check_keys(data: dict[str, Any], allowed: set[str], prefix: str, source: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(f"unknown key (known: {', '.join(sorted(allowed))})", key=f"{prefix}{key}", source=source)


# Parameters added after a chain format was published appear in a genesis only when they differ from
# their default, so every genesis written before keeps its bytes and its chain id (docs/genesis.md).
LATER_PARAMS = {"leader_reputation": 1, "votes": VOTES_ALL_TO_ALL, "collectors": 2, "collector_timeout_ms": 1000}


def canonical_params(params: ChainParams) -> dict[str, int]:
    values = dataclasses.asdict(params)
    return {key: value for key, value in values.items() if LATER_PARAMS.get(key, object()) != value}


def _params(data: Any, source: str) -> ChainParams:
    if not isinstance(data, dict):
        raise ConfigError("must be an object", key="params", source=source)
    known = {f.name for f in dataclasses.fields(ChainParams)}
    _check_keys(data, known, "params.", source)
    try:
        return ChainParams(**data)
    except ConfigError as err:
        raise ConfigError(str(err), source=source) from err


def _validator(entry: Any, index: int, source: str) -> ValidatorInfo:
    key = f"validators[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError("must be an object", key=key, source=source)
    _check_keys(entry, {"node_id", "public_key", "stake", "bls_public_key", "bls_pop"}, f"{key}.", source)
    if ("bls_public_key" in entry) != ("bls_pop" in entry):
        raise ConfigError("bls_public_key and bls_pop come together", key=key, source=source)
    with_bls = "bls_public_key" in entry
    return ValidatorInfo(_int(entry.get("node_id"), f"{key}.node_id", source, MAX_NODE_ID),
                         _hex(entry.get("public_key"), f"{key}.public_key", source, 33),
                         _int(entry.get("stake"), f"{key}.stake", source, MAX_AMOUNT),
                         _hex(entry["bls_public_key"], f"{key}.bls_public_key", source, bls.PUBLIC_KEY_BYTES) if with_bls else b"",
                         _hex(entry["bls_pop"], f"{key}.bls_pop", source, bls.SIGNATURE_BYTES) if with_bls else b"")  # fmt: skip


def _list(data: dict[str, Any], key: str, source: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise ConfigError("must be a list", key=key, source=source)
    return value


def _chain_name(value: Any, source: str) -> str:
    # Refused rather than stringified: the string form of a number or list is Python's, and a second
    # implementation would have to copy it exactly to compute the same chain id.
    if not isinstance(value, str):
        raise ConfigError(f"must be a string, got {value!r}", key="chain_name", source=source)
    return value


def _int(value: Any, key: str, source: str, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"must be a non-negative integer, got {value!r}", key=key, source=source)
    if value > maximum:
        raise ConfigError(f"must be at most {maximum}, got {value}", key=key, source=source)
    return value


def _hex(value: Any, key: str, source: str, size: int) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"must be hex, got {value!r}", key=key, source=source) from err
    if len(raw) != size:
        raise ConfigError(f"must be {size} bytes of hex, got {len(raw)}", key=key, source=source)
    return raw
