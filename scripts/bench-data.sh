#!/usr/bin/env bash
# Install the data the benchmarks read (see DESIGN.md, "Data that can be had on these machines").
# Idempotent: each step is skipped when its result is already there. Runs as root (as on the dev machines and CI).
#   - apt: dataset-fashion-mnist (IDX files), fortunes (topical text files)
#   - r-cran-mlbench: downloaded and unpacked with dpkg -x, NOT installed (installing would pull in R);
#     bench/datasets.py reads data/LetterRecognition.rda from the unpacked tree.
#   - rdata (pure-Python .rda reader) into the project venv, when the venv exists.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${AMALGAMATOR_CACHE:-$HOME/.cache/amalgamator}"
MLBENCH_DIR="$CACHE/debs/r-cran-mlbench"
APT_UPDATED=0

say() { echo "bench-data: $*"; }

apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for pkg in dataset-fashion-mnist fortunes; do
    if installed "$pkg"; then
        say "$pkg already installed"
    else
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_update_once
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if [ -n "$(find "$MLBENCH_DIR" -name LetterRecognition.rda -print -quit 2>/dev/null)" ]; then
    say "r-cran-mlbench already unpacked in $MLBENCH_DIR"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # A local copy of the .deb may be given to skip the download (e.g. an offline re-run).
    if [ -n "${MLBENCH_DEB:-}" ]; then
        cp "$MLBENCH_DEB" "$tmp/"
    else
        apt_update_once
        chown _apt "$tmp" 2>/dev/null || true # lets apt download sandboxed, without a warning
        (cd "$tmp" && apt-get download -qq r-cran-mlbench)
    fi
    deb="$(find "$tmp" -maxdepth 1 -name 'r-cran-mlbench_*.deb' -print -quit)"
    if [ -z "$deb" ]; then
        echo "bench-data: could not download r-cran-mlbench" >&2
        exit 1
    fi
    mkdir -p "$MLBENCH_DIR"
    dpkg -x "$deb" "$MLBENCH_DIR"
    say "unpacked $(basename "$deb") into $MLBENCH_DIR"
fi

if [ -x .venv/bin/pip ]; then
    if .venv/bin/python -c "import rdata" 2>/dev/null; then
        say "rdata already in .venv"
    else
        say "pip install rdata into .venv"
        .venv/bin/pip install -q rdata
    fi
else
    say "no .venv/bin/pip; skipped rdata (pip install rdata where the benchmarks run)"
fi

say "done"
