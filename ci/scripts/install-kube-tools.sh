#!/bin/sh
# Install pinned helm and kubectl for the platform's diff and upgrade jobs, each checked against the
# checksum published beside it. Versions come from .gitlab-ci.yml (HELM_VERSION, KUBECTL_VERSION);
# the download bases can be pointed at a mirror (HELM_DOWNLOAD_BASE, KUBECTL_DOWNLOAD_BASE) and the
# install directory changed (BIN_DIR, default /usr/local/bin).
set -eu

: "${HELM_VERSION:?set HELM_VERSION}" "${KUBECTL_VERSION:?set KUBECTL_VERSION}"
helm_base="${HELM_DOWNLOAD_BASE:-https://get.helm.sh}"
kubectl_base="${KUBECTL_DOWNLOAD_BASE:-https://dl.k8s.io/release}"
bin_dir="${BIN_DIR:-/usr/local/bin}"

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# verify FILE EXPECTED_SHA256
verify() {
  actual="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$actual" != "$2" ]; then
    echo "checksum mismatch for $1: expected $2, got $actual" >&2
    exit 1
  fi
}

helm_tgz="helm-v${HELM_VERSION}-linux-${arch}.tar.gz"
curl -fsSL -o "$tmp/$helm_tgz" "$helm_base/$helm_tgz"
curl -fsSL -o "$tmp/$helm_tgz.sha256sum" "$helm_base/$helm_tgz.sha256sum"
verify "$tmp/$helm_tgz" "$(cut -d' ' -f1 "$tmp/$helm_tgz.sha256sum")"
tar -xzf "$tmp/$helm_tgz" -C "$tmp"
install -m 0755 "$tmp/linux-${arch}/helm" "$bin_dir/helm"

curl -fsSL -o "$tmp/kubectl" "$kubectl_base/v${KUBECTL_VERSION}/bin/linux/${arch}/kubectl"
curl -fsSL -o "$tmp/kubectl.sha256" "$kubectl_base/v${KUBECTL_VERSION}/bin/linux/${arch}/kubectl.sha256"
verify "$tmp/kubectl" "$(cut -d' ' -f1 "$tmp/kubectl.sha256")"
install -m 0755 "$tmp/kubectl" "$bin_dir/kubectl"

"$bin_dir/helm" version --short
"$bin_dir/kubectl" version --client
