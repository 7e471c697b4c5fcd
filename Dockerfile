# mcqd and mcq-loadgen in a Debian bookworm slim image. From the
# repository's root (Podman and Buildah read a Dockerfile too):
#
#   docker build -t mcq .       # or: podman build --format docker -t mcq .
#   docker run -d --name mcq -p 22201:22201 -v mcq-data:/var/lib/mcq \
#     --security-opt seccomp=deploy/seccomp/mcqd.json \
#     --ulimit memlock=-1:-1 --stop-timeout 30 mcq
#
# deploy/seccomp/mcqd-profile makes deploy/seccomp/mcqd.json, and the README
# ("Running in containers and on io_uring-restricted hosts") says why each
# option is there. tests/tests/container.rs checks this file.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mcqd -p mcq-loadgen

FROM debian:bookworm-slim
# A fixed uid, so that a volume's owner means the same user in every image.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/mcq \
        --shell /usr/sbin/nologin mcq \
    && mkdir -p /var/lib/mcq \
    && chown mcq:mcq /var/lib/mcq
COPY --from=build /src/target/release/mcqd /src/target/release/mcq-loadgen /usr/local/bin/
USER mcq
WORKDIR /var/lib/mcq
# The log: a volume on a disk-backed file system (O_DIRECT), never tmpfs.
VOLUME /var/lib/mcq
EXPOSE 22201
# mcqd stops gracefully on SIGTERM: it finishes the requests it has read,
# makes everything durable and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["mcqd", "ping"]
ENTRYPOINT ["mcqd"]
CMD ["--listen", "0.0.0.0", "--data-dir", "/var/lib/mcq"]
