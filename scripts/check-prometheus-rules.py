#!/usr/bin/env python3
"""Checks leafsync's alert rules beyond what promtool checks (run by scripts/lint.sh).

Usage: check-prometheus-rules.py RENDERED RULES TESTS
  RENDERED  `kubectl kustomize manifests/monitoring` output
  RULES     the rules file scripts/prometheus-rules.sh extracted from the manifest
  TESTS     observability/prometheus/leafsync-rules.test.yaml

- the extracted file is exactly the `spec` of the PrometheusRule kustomize renders (what
  promtool tests is what the cluster gets), and that object carries `release: prometheus`;
- every alert has a severity (critical or warning), a summary, a description and a
  runbook_url equal to RUNBOOK_BASE (a comment line in the manifest) + "#" + its name in
  lower case, and that document has a `#### AlertName` heading (GitLab's and GitHub's
  anchor for it); every `####` heading of the runbook section names an alert;
- every alert has a test case that fires it and one that expects it silent.
"""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "manifests/monitoring/prometheusrule.yaml"
RUNBOOK_SECTION = "### Alerts and what to do"


def main(rendered_path: str, rules_path: str, tests_path: str) -> list[str]:
    errors = []
    rendered = [d for d in yaml.safe_load_all(Path(rendered_path).read_text()) if d]
    rule_objects = [d for d in rendered if d.get("kind") == "PrometheusRule"]
    if len(rule_objects) != 1:
        return [f"{rendered_path}: expected one PrometheusRule, found {len(rule_objects)}"]
    rule_object = rule_objects[0]
    if rule_object["metadata"].get("labels", {}).get("release") != "prometheus":
        errors.append("the PrometheusRule lacks the label release: prometheus")
    rules = yaml.safe_load(Path(rules_path).read_text())
    if rules != rule_object["spec"]:
        errors.append(
            f"{rules_path} differs from the rendered PrometheusRule's spec: "
            "scripts/prometheus-rules.sh no longer extracts the manifest faithfully"
        )

    base = re.search(r"^# RUNBOOK_BASE: (\S+)$", MANIFEST.read_text(), re.M)
    if not base:
        return errors + [f"{MANIFEST}: no '# RUNBOOK_BASE: URL' line"]
    base = base.group(1)
    doc_path = re.search(r"/-/blob/[^/]+/(.+)$", base)
    if not doc_path or not (ROOT / doc_path.group(1)).is_file():
        return errors + [f"RUNBOOK_BASE {base} names no file of this repository"]
    doc = (ROOT / doc_path.group(1)).read_text().split("\n")
    headings = set()
    if RUNBOOK_SECTION in doc:
        start = doc.index(RUNBOOK_SECTION) + 1
        for line in doc[start:]:
            if re.match(r"#{1,3} ", line):
                break
            if line.startswith("#### "):
                headings.add(line[5:].strip())
    else:
        errors.append(f"{doc_path.group(1)} has no '{RUNBOOK_SECTION}' section")

    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    names = {r["alert"] for r in alerts}
    for rule in alerts:
        name = rule["alert"]
        if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
            errors.append(f"{name}: severity must be critical or warning")
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not annotations.get(key):
                errors.append(f"{name}: no {key} annotation")
        wanted = f"{base}#{name.lower()}"
        if annotations.get("runbook_url") != wanted:
            errors.append(f"{name}: runbook_url should be {wanted}")
        if name not in headings:
            errors.append(f"{name}: no '#### {name}' heading under '{RUNBOOK_SECTION}'")
    for heading in sorted(headings - names):
        errors.append(f"runbook heading '#### {heading}' names no alert")

    fired, silent = set(), set()
    for case in yaml.safe_load(Path(tests_path).read_text())["tests"]:
        for test in case.get("alert_rule_test", []):
            (fired if test.get("exp_alerts") else silent).add(test["alertname"])
    for name in sorted(names):
        if name not in fired:
            errors.append(f"{name}: no test case in which it fires")
        if name not in silent:
            errors.append(f"{name}: no test case in which it must stay silent")
    return errors


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    problems = main(*sys.argv[1:])
    for problem in problems:
        print(f"check-prometheus-rules: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)
