#!/usr/bin/env bash
# Runs the test suite. pytest exits 5 when it collected no tests: that is reported, not hidden,
# but it is not a failure of the code under test.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
python3 -m uv run --frozen pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests (exit 5)" >&2
  exit 0
fi
exit "$rc"
