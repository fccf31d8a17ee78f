"""ci/scripts/install-kube-tools.sh installs helm and kubectl only when their published checksums match.

Run here against a local mirror (file:// URLs) laid out like get.helm.sh and dl.k8s.io."""

import hashlib
import os
import platform
import subprocess
import tarfile

import pytest

from dagster_platform.paths import ROOT

SCRIPT = ROOT / "ci" / "scripts" / "install-kube-tools.sh"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())

pytestmark = pytest.mark.skipif(ARCH is None, reason=f"no helm build for {platform.machine()}")


def fake_binary(path, name):
    path.write_text(f"#!/bin/sh\necho {name} fake-for-test\n")
    path.chmod(0o755)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mirror(tmp_path):
    helm_base, kube_base = tmp_path / "helm", tmp_path / "k8s"
    staging = tmp_path / "staging" / f"linux-{ARCH}"
    staging.mkdir(parents=True)
    fake_binary(staging / "helm", "helm")
    helm_base.mkdir()
    tgz = helm_base / f"helm-v3.17.3-linux-{ARCH}.tar.gz"
    with tarfile.open(tgz, "w:gz") as archive:
        archive.add(staging, arcname=f"linux-{ARCH}")
    (helm_base / (tgz.name + ".sha256sum")).write_text(f"{sha256(tgz)}  {tgz.name}\n")
    kube_dir = kube_base / "v1.31.4" / "bin" / "linux" / ARCH
    kube_dir.mkdir(parents=True)
    fake_binary(kube_dir / "kubectl", "kubectl")
    (kube_dir / "kubectl.sha256").write_text(sha256(kube_dir / "kubectl"))
    return {"helm": helm_base, "kube": kube_base, "kubectl": kube_dir / "kubectl", "bin": tmp_path / "bin"}


def run(mirror):
    mirror["bin"].mkdir(exist_ok=True)
    env = {
        **os.environ,
        "HELM_VERSION": "3.17.3",
        "KUBECTL_VERSION": "1.31.4",
        "HELM_DOWNLOAD_BASE": mirror["helm"].as_uri(),
        "KUBECTL_DOWNLOAD_BASE": mirror["kube"].as_uri(),
        "BIN_DIR": str(mirror["bin"]),
    }
    return subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_installs_verified_binaries(mirror):
    done = run(mirror)
    assert done.returncode == 0, done.stderr
    assert "helm fake-for-test" in done.stdout and "kubectl fake-for-test" in done.stdout
    assert os.access(mirror["bin"] / "helm", os.X_OK) and os.access(mirror["bin"] / "kubectl", os.X_OK)


def test_refuses_a_binary_whose_checksum_differs(mirror):
    mirror["kubectl"].write_text("#!/bin/sh\necho tampered\n")
    done = run(mirror)
    assert done.returncode == 1
    assert "checksum mismatch" in done.stderr
    assert not (mirror["bin"] / "kubectl").exists()


def test_requires_pinned_versions(mirror):
    env = {k: v for k, v in os.environ.items() if k not in ("HELM_VERSION", "KUBECTL_VERSION")}
    done = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "set HELM_VERSION" in done.stderr
