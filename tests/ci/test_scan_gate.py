"""The scan gate: HIGH/CRITICAL findings fail unless allow-listed with a reason and an unexpired date."""

import datetime as dt
import json

import pytest

from dagster_platform.ci.scan_gate import ScanGateError, evaluate, load_allowlist, load_findings, main

TODAY = "2026-06-01"


def report(tmp_path, *vulns):
    path = tmp_path / "gl-container-scanning-report.json"
    path.write_text(
        json.dumps(
            {
                "version": "15.0.7",
                "vulnerabilities": [
                    {
                        "id": f"id-{i}",
                        "name": f"{cve} in {package}",
                        "severity": severity,
                        "identifiers": [{"type": "cve", "name": cve, "value": cve}],
                        "location": {"dependency": {"package": {"name": package}, "version": "1.0"}},
                    }
                    for i, (cve, severity, package) in enumerate(vulns)
                ],
                "scan": {"type": "container_scanning", "status": "success"},
            }
        )
    )
    return path


def allowlist(tmp_path, text):
    path = tmp_path / "scan-allowlist.toml"
    path.write_text(text)
    return path


def gate(tmp_path, report_path, allow_path, *extra):
    return main(["--report", str(report_path), "--allowlist", str(allow_path), "--today", TODAY, *extra])


def test_no_findings_pass(tmp_path):
    assert gate(tmp_path, report(tmp_path), tmp_path / "absent.toml") == 0


def test_unlisted_high_and_critical_fail(tmp_path, capsys):
    path = report(tmp_path, ("CVE-2026-0001", "High", "openssl"), ("CVE-2026-0002", "Critical", "glibc"))
    assert gate(tmp_path, path, tmp_path / "absent.toml") == 1
    err = capsys.readouterr().err
    assert "HIGH CVE-2026-0001 in openssl" in err and "CRITICAL CVE-2026-0002 in glibc" in err


def test_below_threshold_passes(tmp_path):
    path = report(tmp_path, ("CVE-2026-0003", "Medium", "zlib"), ("CVE-2026-0004", "Low", "bash"))
    assert gate(tmp_path, path, tmp_path / "absent.toml") == 0
    assert gate(tmp_path, path, tmp_path / "absent.toml", "--threshold", "MEDIUM") == 1


def test_allow_listed_with_reason_and_future_expiry_passes(tmp_path, capsys):
    path = report(tmp_path, ("CVE-2026-0001", "High", "openssl"))
    allow = allowlist(
        tmp_path, '[[allow]]\nid = "cve-2026-0001"\nreason = "TLS is terminated at the mesh"\nexpires = 2026-07-01\n'
    )
    assert gate(tmp_path, path, allow) == 0
    assert "allowed until 2026-07-01" in capsys.readouterr().out


def test_expired_entry_no_longer_allows(tmp_path, capsys):
    path = report(tmp_path, ("CVE-2026-0001", "Critical", "openssl"))
    allow = allowlist(tmp_path, '[[allow]]\nid = "CVE-2026-0001"\nreason = "was fine"\nexpires = 2026-05-31\n')
    assert gate(tmp_path, path, allow) == 1
    assert "expired on 2026-05-31" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('id = "CVE-1"\nexpires = 2026-07-01\n', "'reason' is required"),
        ('id = "CVE-1"\nreason = "x"\n', "'expires' is required"),
        ('id = "CVE-1"\nreason = "x"\nexpires = "soon"\n', "'expires' is required as a TOML date"),
        ('reason = "x"\nexpires = 2026-07-01\n', "'id'"),
        ('id = "CVE-1"\nreason = "x"\nexpires = 2026-07-01\nseverity = "low"\n', "unknown keys"),
    ],
)
def test_malformed_allowlist_is_an_error(tmp_path, entry, message):
    with pytest.raises(ScanGateError, match=message):
        load_allowlist(allowlist(tmp_path, "[[allow]]\n" + entry))
    assert gate(tmp_path, report(tmp_path), allowlist(tmp_path, "[[allow]]\n" + entry)) == 2


def test_unreadable_report_is_an_error(tmp_path):
    assert gate(tmp_path, tmp_path / "missing.json", tmp_path / "absent.toml") == 2
    (tmp_path / "bad.json").write_text('{"findings": []}')
    with pytest.raises(ScanGateError, match="not a GitLab security report"):
        load_findings(tmp_path / "bad.json")


def test_stale_entries_are_reported(tmp_path):
    findings = load_findings(report(tmp_path))
    allowances = load_allowlist(allowlist(tmp_path, '[[allow]]\nid = "CVE-9"\nreason = "x"\nexpires = 2027-01-01\n'))
    blocking, notes = evaluate(findings, allowances, "HIGH", dt.date(2026, 6, 1))
    assert blocking == []
    assert any("CVE-9 matches no finding" in note for note in notes)


def test_template_allowlist_is_valid_and_empty():
    from dagster_platform.paths import TEMPLATE_DIR

    assert load_allowlist(TEMPLATE_DIR / "project" / "scan-allowlist.toml") == []
