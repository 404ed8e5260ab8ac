"""The bad-input corpus: hostile Environments, one file each, with the outcome each must have.

A case file starts with comment lines that say what must happen (see README.md):

    # expect: refused | InvalidSpec
    # message: a substring of kubectl's error, or of the Ready condition's message
    # generate: KIND key=value ...   (optional: the body is a seed, expanded by GENERATORS)
    # apply: server-side             (optional: `kubectl apply --server-side`)

The word NAMESPACE in a body stands for the namespace the case is applied in.

Big cases (10,000 objects, megabytes, alias bombs) are generated from tiny seeds so the
repository never holds them. `python corpus.py NN-name.yaml` prints a case as sent.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
EXPECTATIONS = ("refused", "InvalidSpec")
_HEADER = re.compile(r"^#\s*(expect|message|generate|apply):\s*(.*?)\s*$")


@dataclass(frozen=True)
class Case:
    """One file of the corpus."""

    path: Path
    expect: str
    messages: tuple[str, ...]
    generate: tuple[str, dict[str, str]] | None = None
    server_side: bool = False
    blueprint: list[tuple[str, str]] = field(default_factory=list)
    """(kind, name) of the blueprint's objects, as far as the seed says."""

    @property
    def id(self) -> str:
        return self.path.stem

    def body(self, namespace: str = "NAMESPACE") -> bytes:
        """What kubectl is given: the file, or what its generator makes of it, with the
        word NAMESPACE standing for the case's namespace."""
        raw = self.path.read_bytes()
        if self.generate is not None:
            name, options = self.generate
            raw = GENERATORS[name](yaml.safe_load(raw), **options).encode()
        return raw.replace(b"NAMESPACE", namespace.encode())


def load(directory: Path = HERE) -> list[Case]:
    """Every case, in file order; a file without a valid header is an error, not a skip."""
    cases = [_read(path) for path in sorted(directory.glob("[0-9][0-9]-*.yaml"))]
    if not cases:
        raise ValueError(f"no case files in {directory}")
    return cases


def _read(path: Path) -> Case:
    raw = path.read_bytes()
    header: dict[str, list[str]] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        match = _HEADER.match(line)
        if match:
            header.setdefault(match.group(1), []).append(match.group(2))
    (expect,) = header.get("expect") or [""]
    if expect not in EXPECTATIONS or not header.get("message"):
        raise ValueError(f"{path.name}: needs `# expect: refused|InvalidSpec` and `# message:`")
    generate = None
    if header.get("generate"):
        name, *pairs = header["generate"][0].split()
        if name not in GENERATORS:
            raise ValueError(f"{path.name}: unknown generator {name!r}")
        generate = (name, dict(pair.split("=", 1) for pair in pairs))
    return Case(
        path=path,
        expect=expect,
        messages=tuple(header["message"]),
        generate=generate,
        server_side=header.get("apply") == ["server-side"],
        blueprint=_blueprint(raw),
    )


def _blueprint(raw: bytes) -> list[tuple[str, str]]:
    """The (kind, name) pairs a seed names; nothing for a file YAML cannot read (that is
    the point of some cases)."""
    try:
        document = yaml.safe_load(raw)
    except (yaml.YAMLError, UnicodeDecodeError):
        return []
    spec = document.get("spec") if isinstance(document, dict) else None
    resources = spec.get("resources") if isinstance(spec, dict) else None
    found = []
    for item in resources if isinstance(resources, list) else []:
        if not isinstance(item, dict):
            continue
        meta = item.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if isinstance(item.get("kind"), str) and isinstance(name, str):
            found.append((item["kind"], name))
    return found


def _many(seed: dict[str, Any], *, count: str, duplicate: str = "none") -> str:
    """`count` tiny ConfigMaps; `duplicate=last`: the last one repeats the first's name."""
    total = int(count)
    names = [f"c-{index:05d}" for index in range(total)]
    if duplicate == "last":
        names[-1] = names[0]
    seed["spec"]["resources"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}} for name in names
    ]
    return json.dumps(seed, separators=(",", ":"))


def _nested(seed: dict[str, Any], *, depth: str) -> str:
    """Replaces the string "NESTED" with a map `depth` levels deep (written as text:
    Python's own json and yaml give up near 1,000 levels)."""
    levels = int(depth)
    deep = '{"a":' * levels + '"bottom"' + "}" * levels
    return json.dumps(seed, separators=(",", ":")).replace('"NESTED"', deep)


def _huge(seed: dict[str, Any], *, megabytes: str) -> str:
    """Replaces the string "HUGE" with a string of that many megabytes."""
    text = "x" * int(float(megabytes) * 1024 * 1024)
    return json.dumps(seed, separators=(",", ":")).replace('"HUGE"', json.dumps(text))


def _alias_bomb(seed: dict[str, Any], *, levels: str, width: str) -> str:
    """A billion laughs in the seed's first object: each level's anchor is a list of `width`
    aliases of the one before (a few hundred bytes that expand to width**levels strings)."""
    head = {key: value for key, value in seed.items() if key != "spec"}
    first = seed["spec"]["resources"][0]
    lines = [yaml.safe_dump(head, sort_keys=False).rstrip(), "spec:", "  resources:"]
    lines += [
        f"  - {key}: {json.dumps(value)}" if index == 0 else f"    {key}: {json.dumps(value)}"
        for index, (key, value) in enumerate(first.items())
    ]
    lines.append('    lol0: &lol0 "lol"')
    for level in range(1, int(levels) + 1):
        aliases = ", ".join([f"*lol{level - 1}"] * int(width))
        lines.append(f"    lol{level}: &lol{level} [{aliases}]")
    return "\n".join(lines) + "\n"


GENERATORS: dict[str, Callable[..., str]] = {
    "many": _many,
    "nested": _nested,
    "huge-string": _huge,
    "alias-bomb": _alias_bomb,
}


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        case = _read(Path(argument) if Path(argument).exists() else HERE / argument)
        sys.stdout.buffer.write(case.body())
