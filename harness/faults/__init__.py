"""Network faults as the kernel applies them (harness/faults/kernel.py; docs/faults.md)."""
