#!/usr/bin/env python3
"""What `cargo machete` checks, without installing it (run by scripts/lint.sh).

For every workspace crate: a [dependencies] entry must be used by its library or binaries
(src/, build.rs); one used only by tests, benches or examples belongs in
[dev-dependencies]; a [dev-dependencies] entry must be used by tests, benches, examples or
#[cfg(test)] code, and must not repeat a [dependencies] entry (which tests see anyway).
"Used" means the crate's name (with `_` for `-`) appears as a path (`name::`) or in a
`use`/`extern crate` line. Exit 1 with one line per finding.
"""
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)


def sources(crate: pathlib.Path, dirs):
    for d in dirs:
        base = crate / d
        if base.is_file():
            yield base.read_text(encoding="utf-8")
        elif base.is_dir():
            for f in sorted(base.rglob("*.rs")):
                yield f.read_text(encoding="utf-8")


def lib_name(name: str, spec) -> str:
    if isinstance(spec, dict) and "package" in spec:
        name = spec["package"]
    return name.replace("-", "_")


def used(name: str, texts) -> bool:
    pattern = re.compile(rf"\b{re.escape(name)}::|\buse\s+{re.escape(name)}\b|\bextern crate\s+{re.escape(name)}\b|\b{re.escape(name)}!")
    return any(pattern.search(t) for t in texts)


def main() -> int:
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    findings = []
    for member in workspace["workspace"]["members"]:
        crate = ROOT / member
        manifest = tomllib.loads((crate / "Cargo.toml").read_text(encoding="utf-8"))
        lib_texts = list(sources(crate, ["src", "build.rs"]))
        # #[cfg(test)] modules live in src/ too: tests may use dev-dependencies there.
        test_texts = list(sources(crate, ["tests", "benches", "examples"])) + [
            t[t.index("#[cfg(test)]"):] for t in lib_texts if "#[cfg(test)]" in t
        ]
        lib_only = [t.split("#[cfg(test)]")[0] for t in lib_texts]
        deps = manifest.get("dependencies", {})
        dev = manifest.get("dev-dependencies", {})
        for name, spec in deps.items():
            lib = lib_name(name, spec)
            if used(lib, lib_only):
                continue
            where = "only by tests, benches or examples: move it to [dev-dependencies]" if used(lib, test_texts) else "by nothing: remove it"
            findings.append(f"{member}: dependency {name} is used {where}")
        for name, spec in dev.items():
            lib = lib_name(name, spec)
            if name in deps:
                findings.append(f"{member}: dev-dependency {name} repeats a dependency: remove it")
            elif not used(lib, test_texts):
                findings.append(f"{member}: dev-dependency {name} is used by no test, bench or example: remove it")
    for f in findings:
        print(f, file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
