#!/usr/bin/env python3
"""Prints the shell plan scripts/check-docs.sh runs: every runnable ```sh block of the
documents, in the order given (check-docs.sh passes README.md, ARCHITECTURE.md, then
docs/*.md), and a check that every scripts/*.sh they name exists, is executable and
parses. Exits 1, naming each place, when a block lacks its marker or a marker is malformed.

Usage: docs-plan.py DOCUMENT...

Every ```sh block must be preceded by a marker line:
  <!-- readme-check: run -->              run it (in order, from the repository root)
  <!-- readme-check: run VAR=value ... --> run it with these variables (smaller sizes)
  <!-- readme-check: skip REASON -->      cannot run here (needs minikube or GKE)
"""

import re
import shlex
import sys


def main(paths: list[str]) -> int:
    out = ["set -euo pipefail"]
    runs, skips, errors, named = 0, 0, [], set()
    for path in paths:
        lines = open(path, encoding="utf-8").read().split("\n")
        named |= set(re.findall(r"\bscripts/[a-z.-]+\.sh\b", "\n".join(lines)))
        i = 0
        while i < len(lines):
            if not lines[i].startswith("```sh"):
                i += 1
                continue
            start = i
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if j == len(lines):
                errors.append(f"{path}:{start + 1}: a sh block that is never closed")
                break
            body = "\n".join(lines[i + 1:j])
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            m = re.fullmatch(r"<!-- readme-check: (run|skip)(.*?) -->", lines[k].strip()) if k >= 0 else None
            if not m:
                errors.append(f"{path}:{start + 1}: a sh block without a readme-check marker")
            elif m.group(1) == "skip":
                if not m.group(2).strip():
                    errors.append(f"{path}:{start + 1}: skip needs a reason")
                skips += 1
            else:
                runs += 1
                env = m.group(2).split()
                for e in env:
                    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", e):
                        errors.append(f"{path}:{start + 1}: bad variable {e!r}")
                out.append(f"echo {shlex.quote(f'[check-docs] {path}:{start + 1}')} >&2")
                out.append("(")
                out += [f"export {e}" for e in env]
                out.append(body)
                out.append(")")
            i = j + 1
    for script in sorted(named):
        out.append(
            f"test -x {script} || {{ echo 'the documents name {script}, which is missing or not executable' >&2; exit 1; }}"
        )
        out.append(f"bash -n {script}")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    out.append(f"echo '[check-docs] {runs} block(s) ran, {skips} skipped (need a cluster)' >&2")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
