#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). It installs what
# it needs (scripts/tools.sh), then checks formatting, vets, and runs every
# test, including the process-level ones in test/e2e.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh

echo "== go mod download"
go mod download

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test"
go test -count=1 -race -timeout 12m ./...
