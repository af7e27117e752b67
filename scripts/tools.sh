#!/usr/bin/env bash
# Installs the tools the build and the tests need, at pinned versions:
#   protoc (Debian's protobuf-compiler), protoc-gen-go, protoc-gen-go-grpc,
#   and AWS's ec2-metadata-mock (for the instance-role tests).
# Idempotent: a tool already present at the right version is kept.
# Source it (". scripts/tools.sh") to get GOBIN on PATH in your shell.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
EC2_METADATA_MOCK_VERSION=v1.13.0

gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin=$(go env GOPATH)/bin
export PATH="$gobin:$PATH"

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "tools: apt-get install $*" >&2
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

command -v protoc >/dev/null 2>&1 || apt_install protobuf-compiler

if ! protoc-gen-go --version 2>/dev/null | grep -q "${PROTOC_GEN_GO_VERSION}$"; then
  echo "tools: go install protoc-gen-go@${PROTOC_GEN_GO_VERSION}" >&2
  go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
fi
if ! protoc-gen-go-grpc --version 2>/dev/null | grep -q "${PROTOC_GEN_GO_GRPC_VERSION#v}$"; then
  echo "tools: go install protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}" >&2
  go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"
fi
if ! command -v ec2-metadata-mock >/dev/null 2>&1; then
  echo "tools: go install ec2-metadata-mock@${EC2_METADATA_MOCK_VERSION}" >&2
  go install "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@${EC2_METADATA_MOCK_VERSION}"
fi
