# syntax=docker/dockerfile:1
# Multi-stage build of the kvnode image for users with Docker:
#   docker build --target kvnode -t kvstore.dev/kvnode:dev .
#   docker build --target manager -t kvstore.dev/operator:dev .
#   docker build --target test .          # runs the kvnode tests in the build
# Without Docker, `make image` packs the same image from bin/kvnode
# (hack/image) as a tarball that containerd or `docker load` imports.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/kvnode ./cmd/kvnode \
 && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/kvctl ./cmd/kvctl \
 && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/manager ./cmd/manager \
 && mkdir -p /out/data /out/tmp

FROM build AS test
RUN go test ./kvnode/... ./cmd/kvnode/... ./cmd/kvctl/...

# A static binary on an empty base: no shell, no package manager, nothing
# to patch but the binary. The data directory is a volume owned by the
# non-root user; /tmp exists because the readiness check and Go need it.
# The operator: docker build --target manager -t kvstore.dev/operator:dev .
FROM scratch AS manager
COPY --from=build --chmod=1777 /out/tmp /tmp
COPY --from=build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]

FROM scratch AS kvnode
COPY --from=build --chown=65532:65532 /out/data /var/lib/kvnode
COPY --from=build --chmod=1777 /out/tmp /tmp
COPY --from=build /out/kvnode /kvnode
# The client: kubectl exec into a pod of this image gives a user kvctl.
COPY --from=build /out/kvctl /kvctl
USER 65532:65532
ENV KV_DATA_DIR=/var/lib/kvnode KV_LISTEN=:8080
EXPOSE 8080 8081 50051
VOLUME /var/lib/kvnode
ENTRYPOINT ["/kvnode"]
