"""The operator at work: kopf handlers, the engine that routes events to Environments,
each Environment's full pass, event judge, reporter and status writer, prevention,
sharding and standby.

Reads the world through `driftguard.kube`, decides through `driftguard.core`.
"""

# Before kopf, which imports kubernetes_asyncio's generated models when it can (to accept
# them as owners and bodies; driftguard passes plain dicts): loaded first, the bare
# library answers that import with ImportError, and starting takes seconds less.
from driftguard.kube import library as _library  # noqa: F401
