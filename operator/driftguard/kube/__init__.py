"""The Kubernetes layer: the only code that talks to an API server.

The client (errors, retries, discovery, impersonation), supervised watches, server-side
apply and prune, and the operator's records kept in the cluster (ControllerRevision
history, the audit trail, resolved Blueprints). It decides nothing about drift.
"""
