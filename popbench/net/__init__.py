"""Networking of a node: authenticated connections, the peer manager, gossip and WAN emulation."""
