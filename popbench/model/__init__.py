"""The data model: proofs, transfers, blocks, votes and commit certificates, with canonical encodings."""
