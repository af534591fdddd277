# Builds both binaries into one distroless, non-root image: the operator
# (manager) is the entrypoint; the operator starts the collaborative editing
# server from the same image as /tandem-runtime.
# The build commands are the ones of `make build`; keep them in step.
FROM golang:1.26 AS builder
ARG TARGETOS=linux
ARG TARGETARCH
ENV GOTOOLCHAIN=local CGO_ENABLED=0
WORKDIR /src

# Dependencies first, so source edits reuse the module download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
COPY runtime/ runtime/
# The build cache survives between builds (BuildKit cache mount), so a source
# edit recompiles only the packages it touches.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -o bin/manager ./cmd/manager && \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -o bin/tandem-runtime ./cmd/tandem-runtime

FROM gcr.io/distroless/static:nonroot
COPY --from=builder /src/bin/manager /manager
COPY --from=builder /src/bin/tandem-runtime /tandem-runtime
USER 65532:65532
ENTRYPOINT ["/manager"]
