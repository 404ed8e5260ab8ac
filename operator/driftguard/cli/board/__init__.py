"""`driftguard board`: every Environment at a glance, in a browser; read-only.

server (aiohttp: routes, server-sent events) -> pages (jinja2, autoescaped) and details
(one Environment's objects, diff, history, trail, exceptions; compare) -> live (the
Environments the viewer may list, kept by a supervised watch) -> grid (pure: a row of the
grid from an Environment). It reads as the kubeconfig's user, so Kubernetes RBAC decides
what each person sees; it never writes, and what the cluster says is escaped everywhere.
"""
