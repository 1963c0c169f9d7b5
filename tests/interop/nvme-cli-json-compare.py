#!/usr/bin/env python3
"""Compares the JSON of nvme-cli with ulpddp's for the same controller, key by key.

Usage: nvme-cli-json-compare.py DIR, where DIR holds cli-X.json (nvme-cli's output) and
our-X.json (ulpddp's) for X in id-ctrl, id-ns, discover, list. Keys must be the same, in the
same order; values must be equal except where they name something per connection (CNTLID,
the controller each tool created) or per tool (list's DevicePath: a block device for
nvme-cli, an nvme-tcp:// address for ulpddp). Exits 1 on any difference.
"""
import json
import sys
from pathlib import Path

# Values that legitimately differ between the two tools' views of one subsystem.
PER_CONNECTION = {"id-ctrl": {"cntlid"}, "list": {"DevicePath"}}

problems = []


def compare(what, path, cli, ours, skip):
    if isinstance(cli, dict) and isinstance(ours, dict):
        if list(cli) != list(ours):
            missing = [k for k in cli if k not in ours]
            extra = [k for k in ours if k not in cli]
            problems.append(f"{what}{path}: keys differ; missing {missing}, extra {extra}, "
                            f"or order: nvme-cli {list(cli)} vs ours {list(ours)}")
        for k in cli:
            if k in ours and k not in skip:
                compare(what, f"{path}.{k}", cli[k], ours[k], skip)
    elif isinstance(cli, list) and isinstance(ours, list):
        if len(cli) != len(ours):
            problems.append(f"{what}{path}: {len(cli)} elements in nvme-cli's, {len(ours)} in ours")
        for i, (a, b) in enumerate(zip(cli, ours)):
            compare(what, f"{path}[{i}]", a, b, skip)
    elif cli != ours or type(cli) is not type(ours):
        problems.append(f"{what}{path}: nvme-cli {cli!r} vs ours {ours!r}")


def main():
    d = Path(sys.argv[1])
    for what in ("id-ctrl", "id-ns", "discover", "list"):
        cli = json.loads((d / f"cli-{what}.json").read_text())
        ours = json.loads((d / f"our-{what}.json").read_text())
        if what == "discover":
            key = lambda r: (r["subnqn"], r["portid"], r["traddr"], r["trsvcid"])
            cli["records"].sort(key=key)
            ours["records"].sort(key=key)
        if what == "list":
            cli["Devices"].sort(key=lambda r: r["NameSpace"])
            ours["Devices"].sort(key=lambda r: r["NameSpace"])
        before = len(problems)
        compare(what, "", cli, ours, PER_CONNECTION.get(what, set()))
        n = sum(1 for _ in walk_keys(cli))
        print(f"{what}: {n} keys compared, {len(problems) - before} differences")
    for p in problems:
        print("  DIFF " + p)
    return 1 if problems else 0


def walk_keys(v):
    if isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from walk_keys(x)
    elif isinstance(v, list):
        for x in v:
            yield from walk_keys(x)


if __name__ == "__main__":
    sys.exit(main())
