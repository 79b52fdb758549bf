# syntax=docker/dockerfile:1
# Static, stripped imagegate on a distroless non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY pkg ./pkg
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/imagegate/imagegate/pkg/version.Version=${VERSION} -X github.com/imagegate/imagegate/pkg/version.Commit=${COMMIT}" \
      -o /out/imagegate ./cmd/imagegate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/imagegate /usr/local/bin/imagegate
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/imagegate"]
CMD ["serve"]
