#!/usr/bin/env python3
"""Write a one-layer OCI image archive holding a single static binary, from scratch.

`ctr images import` reads it; no builder, daemon or registry is involved. Deterministic:
the same binary gives the same digests (fixed mtimes, owners and JSON key order).

    oci-image.py NAME BINARY OUT.tar     e.g. localhost/driftguard-pause:1 ./pause pause.tar
"""

import hashlib
import io
import json
import sys
import tarfile


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _layer(binary: str, name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(binary, arcname=name)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755
        with open(binary, "rb") as handle:
            tar.addfile(info, handle)
    return buffer.getvalue()


def _dump(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def main(image: str, binary: str, out: str) -> None:
    name = binary.rsplit("/", 1)[-1]
    layer_digest, layer = _blob(_layer(binary, name))
    config_digest, config = _blob(
        _dump(
            {
                "architecture": "amd64",
                "os": "linux",
                # 65535: the UID and GID upstream's pause image runs as.
                "config": {"Entrypoint": [f"/{name}"], "User": "65535:65535"},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }
        )
    )
    manifest_digest, manifest = _blob(
        _dump(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        )
    )
    index = _dump(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": image,
                        "org.opencontainers.image.ref.name": image.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
    )
    files = [("oci-layout", _dump({"imageLayoutVersion": "1.0.0"})), ("index.json", index)]
    for digest, data in [(layer_digest, layer), (config_digest, config), (manifest_digest, manifest)]:
        files.append((f"blobs/sha256/{digest.split(':', 1)[1]}", data))
    with tarfile.open(out, mode="w") as tar:
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
