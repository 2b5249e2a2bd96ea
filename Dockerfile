# syntax=docker/dockerfile:1
# One image, two programs: /manager (the Parley operator) and /chatserver (the
# chat server). The Deployment picks one with `command`; the operator's default
# chat-server image is this same image. The build commands mirror `make build`
# (a test in test/install keeps them in step).

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS builder
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src

# Modules first (both go.mod files: the operator imports the chat server's
# config through a replace directive), so a source change reuses them.
COPY go.mod go.sum ./
COPY chatserver/go.mod chatserver/go.sum ./chatserver/
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download && (cd chatserver && go mod download)

COPY . .
ENV GOOS=${TARGETOS} GOARCH=${TARGETARCH}
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    LDFLAGS="-s -w -X github.com/parley-chat/parley/chatserver/version.Version=${VERSION} -X github.com/parley-chat/parley/chatserver/version.Commit=${COMMIT}" && \
    CGO_ENABLED=0 go build -ldflags "$LDFLAGS" -o /out/manager ./cmd/manager && \
    cd chatserver && \
    CGO_ENABLED=0 go build -ldflags "$LDFLAGS" -o /out/chatserver ./cmd/chatserver

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="parley" \
      org.opencontainers.image.description="Parley: the ChatCluster operator (/manager) and its chat server (/chatserver)" \
      org.opencontainers.image.source="https://github.com/parley-chat/parley" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/manager /manager
COPY --from=builder /out/chatserver /chatserver
# 65532 is distroless's nonroot user; Kubernetes' runAsNonRoot needs it numeric.
USER 65532:65532
ENTRYPOINT ["/manager"]
