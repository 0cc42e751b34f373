"""What only the PoP (PBFT) validator uses: consensus, ledger, admission, state, status, join."""
