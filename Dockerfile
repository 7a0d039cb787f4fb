# convoice service image.
#
#     docker build -t convoice .
#     docker run --rm -p 127.0.0.1:8080:8080 -v convoice-data:/data convoice
#
# With no configuration it runs the built-in PBX emulator on SQLite in /data;
# point it at a real PBX with the CONVOICE_* variables (README,
# docker-compose.yml). Subcommands other than "serve" work too, for example
#     docker run --rm -it -v convoice-data:/data convoice user add ...

# ---- build --------------------------------------------------------------------
# cgo is needed (SQLite via mattn/go-sqlite3), so build on the Debian-based Go
# image and run on the same Debian release: the binary links against its glibc.
FROM golang:1.26-trixie AS build
WORKDIR /src
ENV CGO_ENABLED=1
# Modules first, so source edits do not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/convoice ./cmd/convoice

# ---- run ----------------------------------------------------------------------
FROM debian:trixie-slim
# ca-certificates: TLS to ARI (https://) and PostgreSQL; curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tzdata \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 convoice \
 && useradd --system --uid 10001 --gid convoice --home-dir /data --shell /usr/sbin/nologin convoice \
 && mkdir -p /data \
 && chown convoice:convoice /data
COPY --from=build /out/convoice /usr/local/bin/convoice

# Not root. Numeric, so orchestrators can tell without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
# Listen on every interface of the container (the default, 127.0.0.1, would
# be unreachable through a published port); keep the SQLite file on the volume.
ENV CONVOICE_LISTEN=0.0.0.0:8080 \
    CONVOICE_DB=/data/convoice.db
VOLUME ["/data"]
EXPOSE 8080

# The port is taken from CONVOICE_LISTEN, so a changed listen address keeps
# the check right.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${CONVOICE_LISTEN##*:}/healthz" || exit 1

# SIGTERM (docker stop) lets convoice finish cleanly; give it time
# (docker-compose.yml: stop_grace_period).
ENTRYPOINT ["convoice"]
CMD ["serve"]
