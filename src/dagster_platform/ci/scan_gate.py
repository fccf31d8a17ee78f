"""Scan gate: fail the pipeline on HIGH/CRITICAL image findings that are not allow-listed.

Reads the report of GitLab's Container-Scanning job (Trivy; `gl-container-scanning-report.json`, GitLab
security report format) and the repo's allow-list `scan-allowlist.toml`:

    [[allow]]
    id = "CVE-2024-12345"            # a CVE/GHSA identifier of the finding
    reason = "not reachable: ..."    # required
    expires = 2026-03-31             # required (TOML date); after it the entry no longer applies

Every finding at or above the threshold (default HIGH, i.e. HIGH and CRITICAL) must match an unexpired entry
with a reason; otherwise exit 1 listing them. A malformed allow-list is an error too (exit 2).

Standard library only: user-code pipelines run it from a checkout of the platform repo.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dagster_platform import ci

SEVERITIES = ["INFO", "UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
ALLOWLIST_NAME = "scan-allowlist.toml"
REPORT_NAME = "gl-container-scanning-report.json"


class ScanGateError(Exception):
    """The report or the allow-list cannot be read."""


@dataclass(frozen=True)
class Finding:
    ids: tuple[str, ...]
    severity: str
    package: str
    title: str

    def describe(self) -> str:
        return f"{self.severity} {'/'.join(self.ids) or '(no id)'} in {self.package or '?'}: {self.title}"


@dataclass(frozen=True)
class Allowance:
    id: str
    reason: str
    expires: dt.date


def load_findings(report_path: Path) -> list[Finding]:
    try:
        report = json.loads(report_path.read_text())
    except FileNotFoundError as exc:
        raise ScanGateError(f"{report_path}: no scan report (did the container_scanning job run?)") from exc
    except json.JSONDecodeError as exc:
        raise ScanGateError(f"{report_path}: not JSON: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("vulnerabilities"), list):
        raise ScanGateError(f"{report_path}: not a GitLab security report (no 'vulnerabilities' list)")
    findings = []
    for vuln in report["vulnerabilities"]:
        ids = tuple(
            str(ident.get("value") or ident.get("name")).upper()
            for ident in vuln.get("identifiers", [])
            if ident.get("value") or ident.get("name")
        )
        package = ((vuln.get("location") or {}).get("dependency") or {}).get("package", {}).get("name", "")
        severity = str(vuln.get("severity", "UNKNOWN")).upper()
        title = str(vuln.get("name") or vuln.get("message") or vuln.get("description", ""))[:120]
        findings.append(Finding(ids, severity, package, title))
    return findings


def load_allowlist(path: Path) -> list[Allowance]:
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScanGateError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(data) - {"allow"}
    if unknown:
        raise ScanGateError(f"{path}: unknown top-level keys {sorted(unknown)} (expected [[allow]] tables)")
    allowances, problems = [], []
    for number, entry in enumerate(data.get("allow", []), start=1):
        where = f"{path} [[allow]] #{number}"
        extra = set(entry) - {"id", "reason", "expires"}
        if extra:
            problems.append(f"{where}: unknown keys {sorted(extra)}")
        ident, reason, expires = entry.get("id"), entry.get("reason"), entry.get("expires")
        if not isinstance(ident, str) or not ident.strip():
            problems.append(f"{where}: 'id' (a CVE/GHSA identifier) is required")
        if not isinstance(reason, str) or not reason.strip():
            problems.append(f"{where}: 'reason' is required: say why the finding is acceptable")
        if isinstance(expires, dt.datetime) or not isinstance(expires, dt.date):
            problems.append(f"{where}: 'expires' is required as a TOML date, e.g. expires = 2026-03-31")
        if not problems:
            allowances.append(Allowance(ident.strip().upper(), reason.strip(), expires))
    if problems:
        raise ScanGateError("\n".join(problems))
    return allowances


def evaluate(
    findings: list[Finding], allowances: list[Allowance], threshold: str, today: dt.date
) -> tuple[list[str], list[str]]:
    """(blocking, notes): blocking lists findings that fail the gate; notes are informational."""
    threshold = threshold.upper()
    if threshold not in SEVERITIES:
        raise ScanGateError(f"threshold {threshold!r} is not one of {SEVERITIES}")
    floor = SEVERITIES.index(threshold)
    by_id: dict[str, Allowance] = {a.id: a for a in allowances}
    blocking, notes, used = [], [], set()
    for finding in findings:
        if SEVERITIES.index(finding.severity if finding.severity in SEVERITIES else "UNKNOWN") < floor:
            continue
        matches = [by_id[i] for i in finding.ids if i in by_id]
        valid = [a for a in matches if a.expires >= today]
        if valid:
            used.add(valid[0].id)
            notes.append(f"allowed until {valid[0].expires}: {finding.describe()} ({valid[0].reason})")
        elif matches:
            blocking.append(f"{finding.describe()} (allow-list entry expired on {matches[0].expires})")
        else:
            blocking.append(finding.describe())
    for allowance in allowances:
        if allowance.id not in used:
            notes.append(f"allow-list entry {allowance.id} matches no finding at or above {threshold}: remove it")
    return blocking, notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", type=Path, default=Path(REPORT_NAME), help=f"default: ./{REPORT_NAME}")
    parser.add_argument("--allowlist", type=Path, default=Path(ALLOWLIST_NAME), help=f"default: ./{ALLOWLIST_NAME}")
    parser.add_argument(
        "--threshold",
        default=os.environ.get("CS_SEVERITY_THRESHOLD") or "HIGH",
        help="lowest blocking severity (default: $CS_SEVERITY_THRESHOLD, else HIGH)",
    )
    parser.add_argument("--today", type=dt.date.fromisoformat, default=None, help="date for expiry (tests)")


def run(args: argparse.Namespace) -> int:
    try:
        findings = load_findings(args.report)
        allowances = load_allowlist(args.allowlist)
        blocking, notes = evaluate(findings, allowances, args.threshold, args.today or dt.date.today())
    except ScanGateError as exc:
        print(f"scan-gate: ERROR: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"scan-gate: {note}")
    if blocking:
        print(
            f"scan-gate: FAILED: {len(blocking)} finding(s) at or above {args.threshold.upper()} are not allow-listed"
            f" in {args.allowlist} (fix the image, or add [[allow]] with id, reason and expires):",
            file=sys.stderr,
        )
        for line in blocking:
            print(f"  - {line}", file=sys.stderr)
        return 1
    print(f"scan-gate: OK: {len(findings)} finding(s) in the report, none blocking at {args.threshold.upper()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return ci.main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
