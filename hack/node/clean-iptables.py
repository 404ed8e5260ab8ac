#!/usr/bin/env python3
"""Remove the iptables state a node of hack/node.sh leaves behind, and nothing else.

That is: the DNAT chain named on the command line; the chains the kubelet creates at start
(KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT); and the per-sandbox masquerade
chains of the bridge CNI plugin, recognised by the network name in their comment (a sandbox
killed along with its node never gets the CNI DEL that would remove them).

    clean-iptables.py CHAIN NETWORK
"""

import shlex
import subprocess
import sys

KUBELET_CHAINS = {"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"}


def clean(tool: str, table: str, chain: str, network: str) -> None:
    dump = subprocess.run(
        [f"{tool}-save", "-t", table], capture_output=True, text=True, check=False
    ).stdout
    rules = [shlex.split(line) for line in dump.splitlines() if line.startswith("-A ")]
    existing = {line[1:].split()[0] for line in dump.splitlines() if line.startswith(":")}
    mark = f'name: "{network}" '

    def ours(rule: list[str]) -> bool:
        return any(word.startswith(mark) for word in rule)

    doomed = {chain} | KUBELET_CHAINS
    doomed |= {rule[1] for rule in rules if rule[1].startswith("CNI-") and ours(rule)}
    for rule in rules:
        target = rule[rule.index("-j") + 1] if "-j" in rule else ""
        if rule[1] not in doomed and (target in doomed or ours(rule)):
            subprocess.run([tool, "-t", table, "-D", *rule[1:]], capture_output=True, check=False)
    for name in sorted(doomed & existing):
        subprocess.run([tool, "-t", table, "-F", name], capture_output=True, check=False)
        subprocess.run([tool, "-t", table, "-X", name], capture_output=True, check=False)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    for tool in ("iptables", "ip6tables"):
        for table in ("nat", "filter", "mangle"):
            clean(tool, table, sys.argv[1], sys.argv[2])
