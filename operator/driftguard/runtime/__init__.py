"""The operator at work: kopf handlers, the engine that routes events to Environments,
each Environment's full pass, event judge, reporter and status writer, prevention,
sharding and standby.

Reads the world through `driftguard.kube`, decides through `driftguard.core`.
"""
