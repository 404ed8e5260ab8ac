"""The parts of kubernetes_asyncio driftguard uses, imported without the rest.

driftguard needs its configuration loading (kubeconfig contexts, exec plugins, in-cluster
tokens that rotate) and its aiohttp REST client; it uses none of the generated API classes
and models. The packages' `__init__`s import all of those (about 850 modules: 2 s of
every CLI command and of every operator start, 4 s on a busy machine). So the three
packages are registered empty, with their real `__path__`, before the few modules needed
are imported: submodules load as usual, the generated code never does. When something
has already imported the full library, it is used as it is.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _bare_package(name: str) -> None:
    """`name` in sys.modules with its real search path, its `__init__` not run."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:  # pragma: no cover
        raise ImportError(f"{name} is not an installed package")
    package = types.ModuleType(name)
    package.__spec__ = spec
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = name
    sys.modules[name] = package
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, package)


for _name in (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.models",
):
    _bare_package(_name)

from kubernetes_asyncio.client import api_client, configuration, exceptions, rest  # noqa: E402

# What the library's own kubeconfig loader imports from the package.
_client = sys.modules["kubernetes_asyncio.client"]
for _attribute, _value in (
    ("ApiClient", api_client.ApiClient),
    ("Configuration", configuration.Configuration),
    ("ApiException", exceptions.ApiException),
):
    if not hasattr(_client, _attribute):
        setattr(_client, _attribute, _value)

from kubernetes_asyncio import config  # noqa: E402

ApiClient = api_client.ApiClient
Configuration = configuration.Configuration
ApiException = exceptions.ApiException
RESTClientObject = rest.RESTClientObject
ConfigException = config.ConfigException

__all__ = [
    "ApiClient",
    "ApiException",
    "ConfigException",
    "Configuration",
    "RESTClientObject",
    "config",
]
