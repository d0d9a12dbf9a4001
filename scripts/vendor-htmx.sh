#!/usr/bin/env bash
# Re-fetch htmx, which the operations console (/console at the gateway) loads, from the npm
# registry into gateway/console/static/htmx/, so the console needs no CDN at run time.
# Usage: scripts/vendor-htmx.sh [VERSION] (default: the directory's VERSION file). `npm pack`
# checks the tarball against the registry's integrity hash. Only the file the page loads, and
# the licence.
set -euo pipefail

cd "$(dirname "$0")/.."
dest=gateway/console/static/htmx
version=${1:-$(cat "$dest/VERSION")}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "htmx.org@$version" >/dev/null)
tar -xzf "$tmp/htmx.org-$version.tgz" -C "$tmp"
cp "$tmp/package/dist/htmx.min.js" "$dest/htmx.min.js"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
echo "$version" >"$dest/VERSION"
echo "htmx.org $version vendored into $dest"
