#!/usr/bin/env bash
# Re-fetch the official AsyncAPI 3.0.0 JSON Schema (core/asyncapi/spec/), which the generated
# documents are validated against, from the npm package @asyncapi/specs. Usage:
# scripts/vendor-asyncapi-schema.sh [VERSION] (default: the directory's VERSION file). The
# schema without `$id`s: every definition is inline, so validating needs no network; plus the
# licence and notice.
set -euo pipefail

dest=core/asyncapi/spec
cd "$(dirname "$0")/.."
exec scripts/vendor-npm.sh @asyncapi/specs "$dest" "${1:-$(cat "$dest/VERSION")}" \
    "schemas/3.0.0-without-\$id.json=asyncapi-3.0.0.schema.json" LICENSE NOTICE
