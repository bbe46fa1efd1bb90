#!/usr/bin/env bash
# Rebuilds web/static/vendor/age-encryption.js and its LICENSE-*.txt from package-lock.json.
# Same lock file → byte-identical output; .ci/run runs this and fails on any difference.
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null 2>&1 || { echo "build.sh: npm is missing (install Node.js 20+)" >&2; exit 1; }
# Exactly the lock file; no install scripts (esbuild's binary comes from its
# platform package, @esbuild/<os>-<arch>, which needs none).
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
node build.mjs
