#!/usr/bin/env bash
# Re-fetch htmx, which the operations console (/console at the gateway) loads, from the npm
# registry into gateway/console/static/htmx/, so the console needs no CDN at run time.
# Usage: scripts/vendor-htmx.sh [VERSION] (default: the directory's VERSION file). Only the
# file the page loads, and the licence.
set -euo pipefail

dest=gateway/console/static/htmx
cd "$(dirname "$0")/.."
exec scripts/vendor-npm.sh htmx.org "$dest" "${1:-$(cat "$dest/VERSION")}" \
    dist/htmx.min.js LICENSE
