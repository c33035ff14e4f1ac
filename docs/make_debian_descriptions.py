"""Write the JSON Lines file of docs/records.md's example: one record per Debian package
description, with its section as the label, from the package lists APT keeps on every Debian
system (`apt-get update` fills them).

    python docs/make_debian_descriptions.py descriptions.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
from collections import Counter
from pathlib import Path

LISTS = Path("/var/lib/apt/lists")


def package_lists() -> list[Path]:
    return sorted(path for path in LISTS.glob("*_Packages*") if not path.name.endswith(".diff_Index"))


def stanzas(path: Path) -> list[dict[str, str]]:
    """The fields of each package in one list (apt-helper decompresses .lz4, .xz, .gz)."""
    text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True,
                          text=True).stdout
    packages = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line[0].isspace():
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        if fields.get("Description") and fields.get("Section"):
            packages.append(fields)
    return packages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records, seen = [], set()
    for path in package_lists():
        for fields in stanzas(path):
            key = (fields["Description"], fields["Section"])
            if key not in seen:
                seen.add(key)
                records.append({"description": key[0], "section": key[1], "package": fields["Package"]})
    if not records:
        raise SystemExit(f"no package lists in {LISTS}: run apt-get update first")
    random.Random(args.seed).shuffle(records)  # the last 10%, which validates, is then a fair sample
    with args.output.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    sections = Counter(record["section"] for record in records)
    print(f"{len(records):,} records, {len(sections)} sections; most: {sections.most_common(5)}")


if __name__ == "__main__":
    main()
