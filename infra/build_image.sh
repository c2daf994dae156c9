#!/usr/bin/env bash
# Build infra/Dockerfile with podman or docker, honouring this machine's pip configuration (`make image`).
#
#   infra/build_image.sh [TAG]          # default sragu-bench:0.1.0
#   env: CONTAINER_ENGINE  podman | docker (default: the first of them whose `info` answers)
#        BASE_IMAGE        default python:3.11-slim-bookworm; a missing localhost/... base is built first by
#                          infra/build_base.sh (Debian packages, no registry needed)
#        TORCH_VARIANT     cpu (default) | cu128 | ...
#        PIP               the pip whose configuration the build uses (default: python3 -m pip)
#        FORCE=1           build even if the image is up to date
#
# Up to date: the image TAG carries the label sragu.inputs equal to the hash of everything the build reads
# (the files .dockerignore lets in, the base image's id, the torch variant); then nothing is built.
#
# The pip configuration (`pip config list`: its files and PIP_* variables, the variables winning as in pip)
# becomes a temporary pip.conf passed as the build secret `pipconf`.  The local paths it names (find-links
# folders, file:// indexes with the folder above them, where their links point, the CA bundle, constraint
# files) are bind-mounted read-only under /run/pip-host during the build, and the pip.conf names them there.
# None of it is in the image.  docker build cannot mount host paths: with docker the configuration must name
# indexes and files the build can reach without them.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-sragu-bench:0.1.0}
base=${BASE_IMAGE:-python:3.11-slim-bookworm}
variant=${TORCH_VARIANT:-cpu}
engine=${CONTAINER_ENGINE:-}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/infra/containers.conf}   # podman: runc and ulimits

if [ -z "$engine" ]; then
    for e in podman docker; do
        if command -v "$e" >/dev/null && "$e" info >/dev/null 2>&1; then engine=$e; break; fi
    done
fi
if [ -z "$engine" ]; then
    echo "error: no container engine answers: install podman (apt-get install podman runc) or docker" >&2
    exit 2
fi

if ! "$engine" image inspect "$base" >/dev/null 2>&1; then
    if [[ $base == localhost/* ]]; then
        CONTAINER_ENGINE=$engine infra/build_base.sh "$base"
    elif ! "$engine" pull "$base"; then
        echo "error: cannot pull $base; without a registry, BASE_IMAGE=localhost/sragu-base:bookworm builds" \
             "a base from Debian packages (infra/build_base.sh)" >&2
        exit 2
    fi
fi
base_id=$("$engine" image inspect --format '{{.Id}}' "$base" 2>/dev/null || echo "$base")

inputs=$( { printf '%s\n' "$base_id" "$variant"
            find infra/Dockerfile .dockerignore README.md pyproject.toml constraints.txt sragu_core components \
                 pipelines infra -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z -u \
                 | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
have=$("$engine" image inspect --format '{{index .Config.Labels "sragu.inputs"}}' "$tag" 2>/dev/null || true)
if [ "$have" = "$inputs" ] && [ -z "${FORCE:-}" ]; then
    echo "$tag is up to date (sragu.inputs=$inputs)"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Host paths appear under $prefix, a tmpfs of the install steps (infra/Dockerfile): podman leaves an empty
# mount point in the layer for every -v target outside one.
prefix=/run/pip-host
[ "$engine" = podman ] || prefix=
${PIP:-python3 -m pip} config list >"$tmp/pip-config.txt" 2>/dev/null || : >"$tmp/pip-config.txt"
# -> $tmp/pip.conf; $tmp/mounts, one host path a line; $tmp/torch-local, non-empty when a find-links folder
#    holds the pinned torch of this variant (then the build uses no PyTorch index)
python3 - "$tmp" "$variant" "$prefix" <<'PY'
import ast, configparser, os, re, sys
from pathlib import Path
from urllib.parse import unquote, urlparse

tmp, variant, prefix = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


def local(token):
    """The existing host path a config token names (a path or a file: URL), or None."""
    path = unquote(urlparse(token).path) if token.startswith("file:") else token
    return path if path.startswith("/") and os.path.exists(path) else None


settings = {}
for line in sorted((tmp / "pip-config.txt").read_text().splitlines(), key=lambda s: s.startswith(":env:")):
    key, sep, value = line.partition("=")
    if sep:  # section.name='value'; the PIP_* variables (section :env:) come last and win
        section, _, name = key.rpartition(".")
        settings[("global" if section == ":env:" else section, name)] = ast.literal_eval(value)

conf, mounts, links = configparser.RawConfigParser(), set(), []
for (section, name), value in settings.items():
    tokens = value.split()
    for path in filter(None, map(local, tokens)):
        if name == "find-links" and os.path.isdir(path):
            links.append(path)
        if name in ("index-url", "extra-index-url") and path.rstrip("/").count("/") > 1:
            path = os.path.dirname(path.rstrip("/"))  # a file:// index's links point beside it (../../files)
        mounts.add(path)
    if prefix:
        tokens = [t.replace(local(t), prefix + local(t), 1) if local(t) else t for t in tokens]
    if not conf.has_section(section):
        conf.add_section(section)
    conf.set(section, name, " ".join(tokens))
with open(tmp / "pip.conf", "w") as fh:
    conf.write(fh)
(tmp / "mounts").write_text("".join(f"{m}\n" for m in sorted(mounts)))
pin = re.search(r"^torch==(\S+)", Path("constraints.txt").read_text(), re.M).group(1)
held = any(f.startswith(f"torch-{pin}+{variant}-") for d in links for f in os.listdir(d))
(tmp / "torch-local").write_text("yes" if held else "")
PY

args=(-f infra/Dockerfile -t "$tag" --label "sragu.inputs=$inputs"
      --build-arg "BASE_IMAGE=$base" --build-arg "TORCH_VARIANT=$variant"
      --secret "id=pipconf,src=$tmp/pip.conf")
if [ "$engine" = podman ]; then
    args+=(--format docker)   # keeps SHELL, which OCI image configs have no field for
fi
if [ -s "$tmp/torch-local" ]; then
    args+=(--build-arg TORCH_INDEX_URL=)
fi
while read -r path; do
    if [ -n "$prefix" ]; then
        args+=(-v "$path:$prefix$path:ro")
    else
        echo "warning: $engine build cannot mount $path, which the pip configuration names" >&2
    fi
done <"$tmp/mounts"

echo "+ $engine build ${args[*]} ."
"$engine" build "${args[@]}" .
