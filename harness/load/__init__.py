"""Load generation: proof/transfer drivers, workload plans, raw records, PoP miners."""
