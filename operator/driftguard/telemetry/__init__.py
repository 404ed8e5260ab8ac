"""What the operator tells people and machines: structured logs and Prometheus collectors.

Module-level, created once; no per-object labels. Knows nothing of Environments.
"""
