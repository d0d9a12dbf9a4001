#!/usr/bin/env bash
# Vendor files of an npm package into the repository, so nothing is loaded from a CDN or the
# registry at run time. Usage:
#   scripts/vendor-npm.sh PACKAGE DEST VERSION FILE[=NAME]...
# FILE is a path inside the package (`package/` left out), copied to DEST/NAME (default: its
# base name); DEST/VERSION records the version. `npm pack` checks the tarball against the
# registry's integrity hash. The scripts vendor-swagger-ui.sh, vendor-htmx.sh and
# vendor-asyncapi-schema.sh call this with their package's files.
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 PACKAGE DEST VERSION FILE[=NAME]..." >&2; exit 2; }
package=$1 dest=$2 version=$3
shift 3

cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package@$version" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp"
for spec in "$@"; do
    file=${spec%%=*}
    name=$(basename "${spec#*=}")
    cp "$tmp/package/$file" "$dest/$name"
done
echo "$version" >"$dest/VERSION"
echo "$package $version vendored into $dest"
