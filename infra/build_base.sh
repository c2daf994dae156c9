#!/usr/bin/env bash
# Build the local base image of infra/Dockerfile from Debian packages, for machines that reach a Debian
# mirror but no image registry (the development machine).  Debian bookworm's python3 is 3.11, as in
# python:3.11-slim-bookworm, the default base for everyone with a registry; wget is for KubeRay's probes.
#
#   infra/build_base.sh [TAG]            # default localhost/sragu-base:bookworm; needs root and debootstrap
#   DEBIAN_MIRROR=http://... CONTAINER_ENGINE=docker infra/build_base.sh
#
# About two minutes: debootstrap's minimal variant plus python3, venv, pip, the CA bundle and wget (≈200 MB),
# imported as a one-layer image.
set -euo pipefail

tag=${1:-localhost/sragu-base:bookworm}
engine=${CONTAINER_ENGINE:-podman}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

command -v debootstrap >/dev/null || { echo "error: debootstrap not found (apt-get install debootstrap)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root (run as root, or use a registry base image)" >&2; exit 2; }

root=$(mktemp -d /tmp/sragu-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,wget \
    bookworm "$root" "$mirror"
# Downloaded .debs and package lists are not needed at run time; an image user runs apt-get update first.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/log/*.log
tar -C "$root" --numeric-owner -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag"
echo "built $tag"
