#!/usr/bin/env bash
# Re-fetch the official AsyncAPI 3.0.0 JSON Schema (core/asyncapi/spec/), which the generated
# documents are validated against, from the npm package @asyncapi/specs. Usage:
# scripts/vendor-asyncapi-schema.sh [VERSION] (default: the directory's VERSION file). `npm pack`
# checks the tarball against the registry's integrity hash. The schema without `$id`s: every
# definition is inline, so validating needs no network; plus the licence and notice.
set -euo pipefail

cd "$(dirname "$0")/.."
dest=core/asyncapi/spec
version=${1:-$(cat "$dest/VERSION")}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@asyncapi/specs@$version" >/dev/null)
tar -xzf "$tmp/asyncapi-specs-$version.tgz" -C "$tmp"
cp "$tmp/package/schemas/3.0.0-without-\$id.json" "$dest/asyncapi-3.0.0.schema.json"
cp "$tmp/package/LICENSE" "$tmp/package/NOTICE" "$dest/"
echo "$version" >"$dest/VERSION"
echo "@asyncapi/specs $version: the 3.0.0 schema vendored into $dest"
