"""The command line: `driftguard` and `kubectl driftguard`, and the views they print.

Read-only except `rollback`; each command reads the cluster through `driftguard.kube`
and judges with the same pure core as the operator. `main.main` is the entry point.
"""
