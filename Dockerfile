# Multi-stage build: compile roost, then ship only the binary on a slim base.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin roost

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --no-create-home roost \
    && mkdir -p /data && chown roost:roost /data
COPY --from=build /src/target/release/roost /usr/local/bin/roost
COPY deploy/entrypoint.sh /usr/local/bin/roost-entrypoint
ENV ROOST_DATA_DIR=/data ROOST_LISTEN=[::]:8080
EXPOSE 8080
VOLUME /data
# The entrypoint hands a freshly mounted (root-owned) volume to the roost
# user, then drops root before starting the server.
ENTRYPOINT ["/usr/local/bin/roost-entrypoint"]
CMD ["serve"]
