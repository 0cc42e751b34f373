"""The Antimony proof-of-work network: blocks, the block tree, retargeting, the in-node miner, the node."""
