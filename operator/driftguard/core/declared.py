"""An Environment as the operator receives it: its spec parsed once into the typed model.

The handlers make one `Declared` of each body they are given; nothing below them reads
the raw spec again. The defaults are written here once (the target namespace is the
Environment's own unless set). An invalid spec is kept as its error, with the little
that can still be told about the Environment (where it writes, which Blueprint it
names), so that it is reported and sharded, never applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from driftguard.core.model import (
    DeletionPolicy,
    EnvironmentSpec,
    InvalidSpecError,
    Prevention,
    parse_spec,
)

_SLIM_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")
_SLIM_SPEC = ("targetNamespace", "blueprintRef", "deletionPolicy")


@dataclass(frozen=True, slots=True)
class Declared:
    body: dict[str, Any]
    """As received, status included: history, Events and the audit trail keep it whole."""
    spec: EnvironmentSpec | None
    error: InvalidSpecError | None = None
    is_slim: bool = False
    """Made by `slim`: part of the body only."""

    @classmethod
    def of(cls, body: dict[str, Any], *, like: Declared | None = None) -> Declared:
        """`like`: the same Environment as received before; its parsed spec is kept when
        the spec cannot have changed (same uid and generation: a status write, a label)."""
        if like is not None and _same_spec(like.body, body):
            # The same spec, decoded anew: the parse holds the first copy's manifests, so
            # the body keeps that copy too (a 100-object spec is about 84 KB of objects).
            if "spec" in like.body:
                body = {**body, "spec": like.body["spec"]}
            return cls(body, like.spec, like.error)
        try:
            return cls(body, parse_spec(body.get("spec") or {}))
        except InvalidSpecError as exc:
            return cls(body, None, exc)

    @classmethod
    def unparsed(cls, body: dict[str, Any]) -> Declared:
        """The body only, its spec not parsed: for an Environment another replica acts on,
        of which only the properties below (read from the raw spec) are asked."""
        return cls(body, None)

    @property
    def is_parsed(self) -> bool:
        """Parsed, into a spec or its error (`of`); not `unparsed` nor `slim`."""
        return self.spec is not None or self.error is not None

    def slim(self) -> Declared:
        """Unparsed, and only what sharding reads of an Environment it does not act on: its
        name, where it writes, its Blueprint and its conditions. A body of 100 objects is
        about 260 KB of Python objects; this, a few hundred bytes."""
        meta, spec = self.body.get("metadata") or {}, self.body.get("spec") or {}
        status = self.body.get("status") or {}
        return Declared(
            {
                "metadata": {key: meta[key] for key in _SLIM_METADATA if key in meta},
                "spec": {key: spec[key] for key in _SLIM_SPEC if key in spec},
                "status": {"conditions": status.get("conditions") or []},
            },
            None,
            is_slim=True,
        )

    def kept(self) -> Declared:
        """What is kept of the body between events: status.resources cut to one entry per
        apiVersion, kind and namespace. The operator builds those entries from its own
        records; of the received ones only the inventory counts, and only until its first
        write (which kinds, where, a pass lists for leftovers). 100 entries are about
        47 KB of Python objects."""
        status = self.body.get("status")
        if not isinstance(status, dict):
            return self
        entries = status.get("resources")
        if not isinstance(entries, list) or not entries:
            return self
        firsts: dict[tuple[Any, Any, Any], Any] = {}
        for entry in entries:
            if isinstance(entry, dict):
                where = (entry.get("apiVersion"), entry.get("kind"), entry.get("namespace"))
                firsts.setdefault(where, entry)
        if len(firsts) == len(entries):
            return self
        body = {**self.body, "status": {**status, "resources": list(firsts.values())}}
        return Declared(body, self.spec, self.error, is_slim=self.is_slim)

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def ident(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def generation(self) -> int | None:
        generation = self.body["metadata"].get("generation")
        return int(generation) if generation is not None else None

    @property
    def is_deleted(self) -> bool:
        return bool(self.body["metadata"].get("deletionTimestamp"))

    @property
    def target_namespace(self) -> str:
        """Where its objects go: spec.targetNamespace, else the Environment's namespace."""
        if self.spec is not None:
            return self.spec.target_namespace or self.namespace
        return self._raw_text("targetNamespace") or self.namespace

    @property
    def blueprint(self) -> str | None:
        """The name of the Blueprint it is made from, if any."""
        if self.spec is not None:
            return self.spec.blueprint_ref.name if self.spec.blueprint_ref else None
        ref = self._raw("blueprintRef")
        return str(ref.get("name")) if isinstance(ref, dict) else None

    @property
    def pinned_revision(self) -> int | None:
        """The Blueprint revision it is pinned to; None: it follows the Blueprint."""
        if self.spec is not None:
            return self.spec.blueprint_ref.revision if self.spec.blueprint_ref else None
        ref = self._raw("blueprintRef")
        pinned = ref.get("revision") if isinstance(ref, dict) else None
        return pinned if isinstance(pinned, int) else None

    @property
    def is_prevention_off(self) -> bool:
        if self.spec is not None:
            return self.spec.prevention is Prevention.OFF
        return self._raw("prevention") in (None, Prevention.OFF.value)

    @property
    def deletes_objects(self) -> bool:
        """deletionPolicy Delete: its objects go with it."""
        if self.spec is not None:
            return self.spec.deletion_policy is DeletionPolicy.DELETE
        return bool(self._raw("deletionPolicy") == DeletionPolicy.DELETE.value)

    @property
    def service_account_name(self) -> str | None:
        if self.spec is not None:
            return self.spec.service_account_name
        return self._raw_text("serviceAccountName")

    @property
    def kube_config(self) -> tuple[str, str] | None:
        """(Secret name, key) of the remote cluster's kubeconfig; None: this cluster."""
        if self.spec is not None:
            ref = self.spec.kube_config
            return (ref.secret_ref.name, ref.secret_ref.key) if ref is not None else None
        raw = self._raw("kubeConfig")
        secret = raw.get("secretRef") if isinstance(raw, dict) else None
        if not isinstance(secret, dict) or not isinstance(secret.get("name"), str):
            return None
        key = secret.get("key")
        return (secret["name"], key if isinstance(key, str) and key else "value")

    @property
    def kinds(self) -> set[tuple[str, str]]:
        """(apiVersion, kind) of each object it declares inline."""
        if self.spec is not None:
            return {(m["apiVersion"], m["kind"]) for m in self.spec.resources}
        resources = self._raw("resources")
        items = resources if isinstance(resources, list) else []
        return {
            (str(m["apiVersion"]), str(m["kind"]))
            for m in items
            if isinstance(m, dict) and "apiVersion" in m and "kind" in m
        }

    def _raw(self, field: str) -> Any:
        # For a spec the model refused (or one not parsed): what can be read of it, leniently.
        spec = self.body.get("spec")
        return spec.get(field) if isinstance(spec, dict) else None

    def _raw_text(self, field: str) -> str | None:
        value = self._raw(field)
        return value if isinstance(value, str) and value else None


def _same_spec(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """The API server bumps metadata.generation at every change of an Environment's spec."""
    old, new = before.get("metadata") or {}, after.get("metadata") or {}
    return (
        new.get("generation") is not None
        and old.get("generation") == new.get("generation")
        and old.get("uid") == new.get("uid")
    )
