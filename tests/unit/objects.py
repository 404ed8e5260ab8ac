"""Objects as the Kubernetes API server stores them, and the edits other field managers make.

`deployment()` is what the server answers to driftguard's server-side apply of the
blueprint `web` Deployment: defaults filled in, `status` written by the controller,
and `metadata.managedFields` as kube-apiserver records them (fieldsV1 trees; the
Apply entry of `driftguard`, the controller's Update of the revision annotation and
its Update of the status subresource). The helpers below change a copy the way a
real Update does: the value moves, and so does the ownership of the field.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

T0 = "2026-11-26T10:00:00Z"
"""driftguard's apply."""
T_EDIT = "2026-11-26T10:05:00Z"
"""A person's manual change, after every controller write in the fixtures."""

_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: staging
  uid: 5b0f7c1e-2a8d-4c7e-9a51-0d6f3c2b9e10
  resourceVersion: "1042"
  generation: 1
  creationTimestamp: "2026-11-26T10:00:00Z"
  annotations:
    deployment.kubernetes.io/revision: "1"
  finalizers:
  - example.com/protect
  labels:
    app: web
    app.kubernetes.io/managed-by: driftguard
    app.kubernetes.io/name: web
    driftguard.io/environment: staging
    driftguard.io/environment-namespace: platform
  managedFields:
  - apiVersion: apps/v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata:
        f:finalizers:
          v:"example.com/protect": {}
        f:labels:
          f:app: {}
          f:app.kubernetes.io/managed-by: {}
          f:app.kubernetes.io/name: {}
          f:driftguard.io/environment: {}
          f:driftguard.io/environment-namespace: {}
      f:spec:
        f:replicas: {}
        f:selector: {}
        f:template:
          f:metadata:
            f:labels:
              f:app: {}
          f:spec:
            f:containers:
              k:{"name":"web"}:
                .: {}
                f:env:
                  k:{"name":"LOG_LEVEL"}:
                    .: {}
                    f:name: {}
                    f:value: {}
                f:image: {}
                f:name: {}
                f:ports:
                  k:{"containerPort":8080,"protocol":"TCP"}:
                    .: {}
                    f:containerPort: {}
                    f:name: {}
                f:resources:
                  f:limits:
                    f:cpu: {}
                    f:memory: {}
    manager: driftguard
    operation: Apply
    time: "2026-11-26T10:00:00Z"
  - apiVersion: apps/v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata:
        f:annotations:
          .: {}
          f:deployment.kubernetes.io/revision: {}
    manager: kube-controller-manager
    operation: Update
    time: "2026-11-26T10:00:01Z"
  - apiVersion: apps/v1
    fieldsType: FieldsV1
    fieldsV1:
      f:status:
        f:availableReplicas: {}
        f:conditions:
          .: {}
          k:{"type":"Available"}:
            .: {}
            f:lastTransitionTime: {}
            f:lastUpdateTime: {}
            f:message: {}
            f:reason: {}
            f:status: {}
            f:type: {}
        f:observedGeneration: {}
        f:readyReplicas: {}
        f:replicas: {}
        f:updatedReplicas: {}
    manager: kube-controller-manager
    operation: Update
    subresource: status
    time: "2026-11-26T10:00:05Z"
spec:
  progressDeadlineSeconds: 600
  replicas: 3
  revisionHistoryLimit: 10
  selector:
    matchLabels:
      app: web
  strategy:
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 25%
    type: RollingUpdate
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - env:
        - name: LOG_LEVEL
          value: info
        image: nginx:1.27.3
        imagePullPolicy: IfNotPresent
        name: web
        ports:
        - containerPort: 8080
          name: http
          protocol: TCP
        resources:
          limits:
            cpu: 500m
            memory: 128Mi
        terminationMessagePath: /dev/termination-log
        terminationMessagePolicy: File
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
status:
  availableReplicas: 3
  conditions:
  - lastTransitionTime: "2026-11-26T10:00:05Z"
    lastUpdateTime: "2026-11-26T10:00:05Z"
    message: Deployment has minimum availability.
    reason: MinimumReplicasAvailable
    status: "True"
    type: Available
  observedGeneration: 1
  readyReplicas: 3
  replicas: 3
  updatedReplicas: 3
"""

_CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: staging
  uid: 0c9d4a52-7f3e-4b61-8d2a-93e1f0b7c6a4
  resourceVersion: "1017"
  creationTimestamp: "2026-11-26T10:00:00Z"
  labels:
    app.kubernetes.io/managed-by: driftguard
    driftguard.io/environment: staging
    driftguard.io/environment-namespace: platform
  managedFields:
  - apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1:
      f:data:
        f:DB_VERSION: {}
        f:LOG_LEVEL: {}
      f:metadata:
        f:labels:
          f:app.kubernetes.io/managed-by: {}
          f:driftguard.io/environment: {}
          f:driftguard.io/environment-namespace: {}
    manager: driftguard
    operation: Apply
    time: "2026-11-26T10:00:00Z"
data:
  DB_VERSION: "5.7"
  LOG_LEVEL: info
"""

_STORED = {"Deployment": yaml.safe_load(_DEPLOYMENT), "ConfigMap": yaml.safe_load(_CONFIGMAP)}


def deployment() -> dict[str, Any]:
    """A fresh copy of the stored `web` Deployment."""
    return copy.deepcopy(_STORED["Deployment"])


def configmap() -> dict[str, Any]:
    """A fresh copy of the stored `web-config` ConfigMap (driftguard is its only manager)."""
    return copy.deepcopy(_STORED["ConfigMap"])


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _walk(obj: Any, pointer: str) -> tuple[Any, str | int]:
    *parents, last = [unescape(token) for token in pointer.split("/")[1:]]
    node = obj
    for token in parents:
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node, (int(last) if isinstance(node, list) and last != "-" else last)


def put(obj: dict[str, Any], pointer: str, value: Any) -> None:
    """Sets the value at an RFC 6901 pointer; `-` or an index inserts into a list."""
    parent, last = _walk(obj, pointer)
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value


def replace(obj: dict[str, Any], pointer: str, value: Any) -> None:
    """Replaces the value at an RFC 6901 pointer."""
    parent, last = _walk(obj, pointer)
    parent[last] = value


def drop(obj: dict[str, Any], pointer: str) -> None:
    """Removes the value at an RFC 6901 pointer."""
    parent, last = _walk(obj, pointer)
    del parent[last]


def entry(obj: dict[str, Any], manager: str, operation: str = "Apply") -> dict[str, Any]:
    """The managedFields entry of one manager and operation."""
    return next(
        e
        for e in obj["metadata"]["managedFields"]
        if e["manager"] == manager and e["operation"] == operation
    )


def disown(obj: dict[str, Any], *path: str) -> None:
    """Takes a field from driftguard's Apply entry, pruning parents it leaves empty."""
    nodes = [entry(obj, "driftguard")["fieldsV1"]]
    for key in path[:-1]:
        nodes.append(nodes[-1][key])
    del nodes[-1][path[-1]]
    for node, key in zip(reversed(nodes[:-1]), reversed(path[:-1]), strict=True):
        if set(node[key]) - {"."}:
            break
        del node[key]


def claim(
    obj: dict[str, Any],
    manager: str,
    fields: dict[str, Any],
    *,
    time: str = T_EDIT,
    operation: str = "Update",
    subresource: str | None = None,
) -> None:
    """Records a managedFields entry as the server writes it for another manager's write."""
    record: dict[str, Any] = {
        "apiVersion": obj["apiVersion"],
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        "manager": manager,
        "operation": operation,
        "time": time,
    }
    if subresource:
        record["subresource"] = subresource
    obj["metadata"]["managedFields"].append(record)


def nest(*path: str, leaf: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fieldsV1 tree down `path`, e.g. nest("f:spec", "f:replicas"), ending in `leaf`."""
    tree: dict[str, Any] = leaf or {}
    for key in reversed(path):
        tree = {key: tree}
    return tree


CONTAINER = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"web"}')
"""The fieldsV1 path of the `web` container."""
