#!/usr/bin/env bash
# Re-fetch the Swagger UI assets that /docs serves (core/http/static/swagger-ui/) from the npm
# registry, so the docs need no CDN at run time. Usage: scripts/vendor-swagger-ui.sh [VERSION]
# (default: the version in the directory's VERSION file). `npm pack` checks the tarball
# against the registry's integrity hash. Only the files the page loads, and the licences.
set -euo pipefail

cd "$(dirname "$0")/.."
dest=core/http/static/swagger-ui
version=${1:-$(cat "$dest/VERSION")}
files=(swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE NOTICE
       swagger-ui-bundle.js.LICENSE.txt)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "swagger-ui-dist@$version" >/dev/null)
tar -xzf "$tmp/swagger-ui-dist-$version.tgz" -C "$tmp"
for file in "${files[@]}"; do
    cp "$tmp/package/$file" "$dest/$file"
done
echo "$version" >"$dest/VERSION"
echo "swagger-ui-dist $version vendored into $dest"
