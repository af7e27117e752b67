#!/usr/bin/env bash
# Regenerates the Go code of proto/delegate/v1 from its .proto files.
# Usage: scripts/gen-proto.sh [OUTDIR]   (default: the repository itself)
# Needs protoc (Debian: protobuf-compiler) and the two plugins at the pinned
# versions below; scripts/tools.sh installs all three.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
mkdir -p "$out/proto"
protoc -I proto \
  --go_out="$out/proto" --go_opt=paths=source_relative \
  --go-grpc_out="$out/proto" --go-grpc_opt=paths=source_relative \
  proto/delegate/v1/*.proto
