"""What a run deploys, where and on what host: calibration, limits, pinning, topology, deployment."""
