#!/usr/bin/env bash
# Builds the kube-vrrp image on this machine without any container registry:
#
#   1. the release binaries on the host:
#        cargo build --release --locked -p kube-vrrp-operator -p kube-vrrp-agent
#   2. a minimal Debian runtime base: `debootstrap --variant=minbase` into a folder, pruned
#      (docs, man pages, locales, apt/dpkg caches), then `docker import`. The base is cached by a
#      digest of its inputs (suite, mirror, packages, this script's base recipe) under
#      $KUBE_VRRP_IMAGE_CACHE (default /var/cache/kube-vrrp-image), so a rebuild reuses it;
#   3. docker build -f deploy/Dockerfile --target prebuilt --build-arg BASE=<base> …, the
#      Dockerfile stage that only COPYs the prebuilt binaries (the Dockerfile's default stage
#      still builds from source on public bases, for machines with a registry).
#
# Usage: deploy/build-image.sh [--tag IMAGE] [--keepalived-peer] [--no-cargo] [--rebuild-base]
#   --tag IMAGE        image to build (default kube-vrrp:dev)
#   --keepalived-peer  instead build the keepalived image the image tests use as a VRRP peer
#                      (same kind of base plus Debian's keepalived; default kube-vrrp-keepalived:dev)
#   --no-cargo         reuse the binaries already in $CARGO_TARGET_DIR/release (default target/)
#   --rebuild-base     ignore the cached base (e.g. to pick up Debian security updates)
#   --base-only        only build (or find) the cached base and print its name
# Needs: root (debootstrap), docker, debootstrap, cargo. Prints the image size at the end.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${KUBE_VRRP_IMAGE_CACHE:-/var/cache/kube-vrrp-image}"
suite="${KUBE_VRRP_DEBIAN_SUITE:-bookworm}"
mirror="${KUBE_VRRP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

tag=""
peer=0
cargo_build=1
rebuild_base=0
base_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --keepalived-peer) peer=1; shift ;;
    --no-cargo) cargo_build=0; shift ;;
    --rebuild-base) rebuild_base=1; shift ;;
    --base-only) base_only=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "build-image.sh: $*" >&2; exit 1; }
log() { echo "build-image.sh: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap builds the base as root)"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker daemon answers (docker info failed)"
command -v debootstrap >/dev/null || die "debootstrap is not installed: apt-get install debootstrap"

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac

# Packages on top of minbase. The agent's image: CA certificates and tini (reaps the children of
# tracker/notify scripts); /bin/sh (dash) and coreutils come with minbase. The test peer:
# keepalived (iproute2 comes with it).
if [ "$peer" -eq 1 ]; then
  flavor=keepalived
  packages="ca-certificates,keepalived"
  tag="${tag:-kube-vrrp-keepalived:dev}"
else
  flavor=runtime
  packages="ca-certificates,tini"
  tag="${tag:-kube-vrrp:dev}"
fi

# The base recipe: everything that decides the base's content. Bump the version to force a
# rebuild everywhere when prune_rootfs changes.
recipe="kube-vrrp-base v1 suite=$suite arch=$arch mirror=$mirror variant=minbase include=$packages"
# Packages minbase brings that a runtime image never uses: the package manager's download stack
# (apt, its keyring and TLS libraries), openssl (ca-certificates needs it only to build the
# bundle, which is done) and the ext2 tools. dpkg itself stays, so `dpkg -l` still lists what
# is inside.
runtime_purge="apt gpgv debian-archive-keyring libapt-pkg6.0 libgnutls30 libstdc++6 openssl libssl3
  libp11-kit0 libtasn1-6 libnettle8 libhogweed6 libunistring2 libidn2-0 libgmp10 libffi8 libxxhash0
  libseccomp2 libsystemd0 libzstd1 liblz4-1 e2fsprogs logsave libext2fs2 libss2"

prune_rootfs() { # ROOTFS FLAVOR: drop what the image does not use
  local r="$1"
  if [ "$2" = runtime ]; then
    # shellcheck disable=SC2086 # a word list
    chroot "$r" dpkg --purge --force-depends --force-remove-essential $runtime_purge >/dev/null 2>&1 \
      || die "dpkg --purge in the base failed"
  fi
  # Copyright notices stay (licence compliance); the rest of /usr/share/doc goes.
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* "$r"/usr/share/lintian \
    "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/* "$r"/var/cache/debconf/*-old \
    "$r"/var/lib/dpkg/*-old "$r"/var/log/* "$r"/tmp/* "$r"/root/.bash_history \
    "$r"/usr/share/zoneinfo "$r"/usr/lib/x86_64-linux-gnu/gconv "$r"/usr/lib/aarch64-linux-gnu/gconv
  : > "$r/etc/machine-id"
}
digest="$(printf '%s\n' "$recipe" "$runtime_purge" "$(declare -f prune_rootfs)" | sha256sum | cut -c1-16)"
base="kube-vrrp-base-$flavor:$digest"
tarball="$cache/base-$flavor-$digest.tar"

mkdir -p "$cache"
if [ "$rebuild_base" -eq 1 ]; then
  docker image rm "$base" >/dev/null 2>&1 || true
  rm -f "$tarball"
fi

if docker image inspect "$base" >/dev/null 2>&1; then
  log "base $base already loaded (cached)"
else
  if [ -f "$tarball" ]; then
    log "base tarball $tarball cached; importing"
  else
    log "building base $base: debootstrap --variant=minbase --include=$packages $suite (a few minutes)"
    work="$(mktemp -d "$cache/rootfs-XXXXXX")"
    trap 'umount -R "$work/rootfs" 2>/dev/null || true; rm -rf "$work"' EXIT
    debootstrap --variant=minbase --arch="$arch" --include="$packages" \
      "$suite" "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
      || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    prune_rootfs "$work/rootfs" "$flavor"
    tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$work"
    trap - EXIT
  fi
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    "$tarball" "$base" >/dev/null
  log "imported $base"
  # Older bases of this flavor (other digests) are no longer used: drop them.
  for old in "$cache"/base-"$flavor"-*.tar; do
    [ "$old" = "$tarball" ] || rm -f "$old"
  done
  docker image ls --format '{{.Repository}}:{{.Tag}}' "kube-vrrp-base-$flavor" | while read -r img; do
    [ "$img" = "$base" ] || docker image rm "$img" >/dev/null 2>&1 || true
  done
fi

if [ "$base_only" -eq 1 ]; then
  echo "$base"
  exit 0
fi

if [ "$peer" -eq 1 ]; then
  # The keepalived peer is the base itself, tagged.
  docker tag "$base" "$tag"
else
  target_dir="${CARGO_TARGET_DIR:-$repo/target}"
  if [ "$cargo_build" -eq 1 ]; then
    log "cargo build --release --locked -p kube-vrrp-operator -p kube-vrrp-agent"
    (cd "$repo" && cargo build --release --locked -p kube-vrrp-operator -p kube-vrrp-agent)
  fi
  for bin in kube-vrrp-operator kube-vrrp-agent; do
    [ -x "$target_dir/release/$bin" ] || die "$target_dir/release/$bin is missing (drop --no-cargo)"
  done
  # A small build context with only the binaries, laid out as the Dockerfile's prebuilt stage
  # expects (dist/<arch>/), so neither the repository nor target/ is sent to the daemon.
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' EXIT
  mkdir -p "$ctx/dist/$arch"
  for bin in kube-vrrp-operator kube-vrrp-agent; do
    install -m 0755 "$target_dir/release/$bin" "$ctx/dist/$arch/$bin"
    strip "$ctx/dist/$arch/$bin" 2>/dev/null || true
  done
  log "docker build --target prebuilt --build-arg BASE=$base -t $tag"
  docker build -q -f "$repo/deploy/Dockerfile" --target prebuilt \
    --build-arg BASE="$base" --build-arg TARGETARCH="$arch" -t "$tag" "$ctx" >/dev/null
fi

size=$(docker image inspect --format '{{.Size}}' "$tag")
log "built $tag ($((size / 1024 / 1024)) MiB, $size bytes; base $base)"
echo "$tag"
