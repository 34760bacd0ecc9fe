#!/usr/bin/env bash
# Install the Debian packages fence needs to build, test and run, and nothing
# else. Idempotent: asks dpkg what is already installed and only calls apt-get
# when something is missing, so a second run is a quick no-op. Uses sudo when
# not root. Set FENCE_FUZZ=1 to also install clang and its libFuzzer runtime.
# Nothing is fetched from anywhere but the machine's configured apt sources.
set -euo pipefail

PACKAGES=(
    build-essential cmake pkg-config
    libevent-dev libssl-dev libhiredis-dev libcriterion-dev liblmdb-dev
    redis-server nginx wrk python3 curl
    libcurl4-openssl-dev libjson-c-dev etcd-server etcd-client
    apache2 litmus rclone awscli python3-boto3 nodejs
    zookeeper libzookeeper-mt-dev
    chromium spin haproxy
)
# npm for the storage tests' S3 server: Debian ships it as its own package;
# a Node.js that brings its own npm (NodeSource) needs none.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
if [[ "${FENCE_FUZZ:-0}" == 1 ]]; then
    PACKAGES+=(clang libclang-rt-14-dev)
fi
# Packages whose install also starts a system service (ports 80 and 6379).
# Our scripts and tests never use those services, so a service that cannot
# start is not an error for us.
SERVICE_PACKAGES=" nginx redis-server apache2 "

say() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "dpkg-query/apt-get not found: this script supports Debian 12 (or a derivative) only"
fi

# pkg_status PKG: print dpkg's status triple, e.g. "install ok installed".
pkg_status() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true; }

missing=()
for p in "${PACKAGES[@]}"; do
    if [[ "$(pkg_status "$p")" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

# The storage tests' S3 server (s3rver, pinned in tests/storage/node's lock
# file) is installed project-locally from the npm registry, once.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
npm_deps() {
    local dir="$ROOT/tests/storage/node"
    [[ -f "$dir/node_modules/s3rver/package.json" ]] && return 0
    command -v npm >/dev/null 2>&1 || die "npm not found after installing it"
    say "running: npm ci --prefix $dir (s3rver for tests/storage)"
    npm ci --prefix "$dir" --no-audit --no-fund --silent || die "npm ci in $dir failed"
}

if [[ ${#missing[@]} -eq 0 ]]; then
    npm_deps
    say "all ${#PACKAGES[@]} packages present, nothing to install"
    exit 0
fi
say "missing: ${missing[*]}"

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
    say "not root: using sudo"
else
    die "not root and sudo is not installed; run as root: apt-get install ${missing[*]}"
fi

export DEBIAN_FRONTEND=noninteractive
say "running: apt-get update"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update \
    || die "apt-get update failed (no network or broken apt sources?)"
say "running: apt-get install -y --no-install-recommends ${missing[*]}"
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"; then
    # The usual cause on a container or busy host: nginx or redis-server
    # unpacked fine but its service could not start, which leaves the package
    # half-configured. The binaries are usable, so only fail on anything else.
    bad=()
    for p in "${missing[@]}"; do
        st=$(pkg_status "$p")
        if [[ "$st" == "install ok installed" ]]; then
            continue
        elif [[ "$SERVICE_PACKAGES" == *" $p "* && "$st" == "install ok half-configured" ]]; then
            say "warning: $p is installed but its system service did not start (not needed here)"
        else
            bad+=("$p (${st:-not installed})")
        fi
    done
    if [[ ${#bad[@]} -gt 0 ]]; then
        die "apt-get install failed for: ${bad[*]}"
    fi
fi

still=()
for p in "${missing[@]}"; do
    case "$(pkg_status "$p")" in
        "install ok installed") ;;
        "install ok half-configured") [[ "$SERVICE_PACKAGES" == *" $p "* ]] || still+=("$p") ;;
        *) still+=("$p") ;;
    esac
done
[[ ${#still[@]} -eq 0 ]] || die "still missing after install: ${still[*]}"
say "installed: ${missing[*]}"
npm_deps
