#!/usr/bin/env bash
# Re-fetch the Swagger UI assets that /docs serves (core/http/static/swagger-ui/) from the npm
# registry, so the docs need no CDN at run time. Usage: scripts/vendor-swagger-ui.sh [VERSION]
# (default: the version in the directory's VERSION file). Only the files the page loads, and
# the licences.
set -euo pipefail

dest=core/http/static/swagger-ui
cd "$(dirname "$0")/.."
exec scripts/vendor-npm.sh swagger-ui-dist "$dest" "${1:-$(cat "$dest/VERSION")}" \
    swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE NOTICE \
    swagger-ui-bundle.js.LICENSE.txt
