"""Writes the krew archive of the kubectl plugin: dist/kubectl-driftguard-<version>.tar.gz.

The archive holds only plugins/kubectl-driftguard, the shim that runs the pip-installed
`driftguard` entry point. It is byte-for-byte reproducible (fixed owner, mode and times,
gzip without a timestamp), so plugins/driftguard.yaml can pin its sha256 and a test can
check the pin. Install from a checkout without an index:
    python3 hack/krew-archive.py
    kubectl krew install --manifest=plugins/driftguard.yaml --archive=dist/kubectl-driftguard-v0.1.0.tar.gz
"""

import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "plugins" / "kubectl-driftguard"
VERSION = "v0.1.0"


def archive_bytes() -> bytes:
    """The .tar.gz, identical on every machine for the same shim."""
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = SHIM.read_bytes()
        info = tarfile.TarInfo("kubectl-driftguard")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(data))
    gz_buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buffer, mtime=0, compresslevel=9) as gz:
        gz.write(tar_buffer.getvalue())
    return gz_buffer.getvalue()


def main() -> int:
    data = archive_bytes()
    target = ROOT / "dist" / f"kubectl-driftguard-{VERSION}.tar.gz"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(data)
    print(f"{target}  sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
