"""The node's vocabulary: every kind a configuration, a profile or the CLI can name, defined once.

They are ``StrEnum``s, so a value read from TOML, JSON or the command line converts with ``Kind(text)``
and the CLI builds its choices from the enum (``[k.value for k in Kind]``).
"""

from __future__ import annotations

from enum import StrEnum


class ConsensusKind(StrEnum):
    """Which network a node runs: the PoP validator (PBFT) or the Antimony proof-of-work node."""

    PBFT = "pbft"
    POW = "pow"


class ByzantineBehaviour(StrEnum):
    """How a faulty PoP validator misbehaves (docs/profiles.md, docs/consensus.md)."""

    # as a leader
    SILENT = "silent"
    EQUIVOCATE = "equivocate"
    INVALID_PROOFS = "invalid-proofs"
    # as a voter
    BAD_SIGNATURE_VOTES = "bad-signature-votes"
    EQUIVOCATE_VOTES = "equivocate-votes"
    WITHHOLD_VOTES = "withhold-votes"
    # as a collector (the collector vote path)
    WITHHOLD_CERTIFICATES = "withhold-certificates"
    BAD_AGGREGATE = "bad-aggregate"
    FORGED_BITMAP = "forged-bitmap"


# Faults only the collector vote path has: on the all-to-all path such a node would simply be honest
COLLECTOR_FAULTS = frozenset({ByzantineBehaviour.WITHHOLD_CERTIFICATES, ByzantineBehaviour.BAD_AGGREGATE,
                              ByzantineBehaviour.FORGED_BITMAP})  # fmt: skip


class VotePath(StrEnum):
    """How PREPARE and COMMIT travel (docs/consensus.md): ECDSA votes to every validator, or BLS shares
    to the view's collectors, who answer with aggregate certificates. A chain parameter (params.votes)."""

    ALL_TO_ALL = "all-to-all"
    COLLECTOR = "collector"


class CryptoBackend(StrEnum):
    """The two secp256k1 backends of popbench.crypto; each verifies the other's signatures."""

    COINCURVE = "coincurve"
    ECDSA = "ecdsa"


def values(kind: type[StrEnum]) -> list[str]:
    """The enum's values in definition order: click choices and error messages are built from them."""
    return [member.value for member in kind]
