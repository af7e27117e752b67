# syntax=docker/dockerfile:1
#
# smd: one static binary for the manager, the agent and the CLI.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t smd .
#
#   # agent (the default command): mount the config, token and CA read-only
#   docker run -d --name smd-agent -v /etc/smd:/etc/smd:ro smd
#
#   # manager: config and TLS files read-only, the store in a volume
#   docker run -d --name smd-manager -p 7070:7070 -p 7071:7071 \
#     -v /etc/smd:/etc/smd:ro -v smd-data:/var/lib/smd \
#     smd manager -c /etc/smd/manager.yaml
#
# The image runs as the distroless "nonroot" user (uid 65532, gid 65532):
# mounted files must be readable by it. It has no shell.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so source changes do not invalidate the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.Version=${VERSION}" \
      -o /out/smd ./cmd/smd \
 && mkdir -p /out/var/lib/smd /out/etc/smd

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot; no
# shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/smd /smd
# An empty data directory owned by nonroot, so a named volume mounted at
# /var/lib/smd (the manager's default data_dir) starts out writable. It is
# not declared a VOLUME: agent containers need no storage.
COPY --from=build --chown=65532:65532 /out/var/lib/smd /var/lib/smd
COPY --from=build /out/etc/smd /etc/smd
USER 65532:65532
# 7070: gRPC (agents, CLI). 7071: HTTP /healthz, /readyz, /metrics.
EXPOSE 7070 7071
ENTRYPOINT ["/smd"]
CMD ["agent", "-c", "/etc/smd/agent.yaml"]
