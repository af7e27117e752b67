#!/usr/bin/env bash
# Installs the tools the build and the tests need, at pinned versions:
#   protoc (Debian's protobuf-compiler), protoc-gen-go, protoc-gen-go-grpc,
#   AWS's ec2-metadata-mock (for the instance-role tests), and PostgreSQL's
#   initdb and pg_ctl (Debian's postgresql, for the PostgreSQL store's
#   tests; scripts/postgres.sh starts a throwaway server with them).
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
# The README's "Running several managers" reads /metrics with curl (test/e2e).
command -v curl >/dev/null 2>&1 || apt_install curl

# Debian keeps initdb and pg_ctl off PATH, in /usr/lib/postgresql/<ver>/bin.
pg_bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if ! { command -v initdb && command -v pg_ctl; } >/dev/null 2>&1; then
  if [ -z "$(pg_bin_dir)" ] || [ ! -x "$(pg_bin_dir)/initdb" ]; then
    # Only the binaries are wanted, not the service the package starts:
    # where nothing stops services from starting at install (a Docker
    # image's policy-rc.d does), a policy-rc.d does for the install.
    pg_policy=""
    if [ "$(id -u)" = 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      pg_policy=1
    fi
    if ! apt_install postgresql; then
      if [ -n "$pg_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
      echo "tools: apt-get install postgresql failed" >&2
      false
    fi
    if [ -n "$pg_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  fi
  export PATH="$(pg_bin_dir):$PATH"
fi

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
