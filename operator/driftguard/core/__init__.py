"""The pure core: what an Environment declares, what drift is, and what to do about it.

The spec model, blueprint rendering, the diff, the policy (revert, flag, tolerate,
prune), the ledger of managed objects and the ChangeSet. No I/O: no client, no kopf,
no event loop, no clock; time is passed in. Everything here is unit-tested without a
server.
"""
