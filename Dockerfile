# Build: queries are checked against the committed .sqlx/ data, so no database is needed here.
# Everything the binary needs from the repository is compiled into it: migrations, the
# dashboard (web/) and the default policies (policies/), so the runtime image holds only the
# binary and the GeoIP database.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked

# The default GeoIP database (CC0) from the npm registry.
FROM node:20-bookworm-slim AS geoip
WORKDIR /geoip
RUN npm pack --silent @ip-location-db/geo-whois-asn-country-mmdb > name.txt \
    && tar -xzf "$(cat name.txt)" \
    && cp package/geo-whois-asn-country.mmdb package/NRO_LICENSE /geoip/ \
    && rm -rf package \
    && npm pack --silent @ip-location-db/asn > asn-name.txt \
    && tar -xzf "$(cat asn-name.txt)" \
    && cp package/asn-ipv4.csv package/asn-ipv6.csv package/ROUTEVIEWS-LICENSE package/DBIP-LICENSE /geoip/ \
    && rm -rf package ./*.tgz name.txt asn-name.txt

FROM debian:bookworm-slim
# curl for the health check. A fixed numeric user, so orchestrators can tell it is not root.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 skywarden \
    && useradd --system --uid 10001 --gid 10001 --home /var/lib/skywarden --create-home skywarden
COPY --from=build /src/target/release/skywarden /usr/local/bin/skywarden
COPY --from=geoip /geoip/ /usr/share/skywarden/geoip/
# No policies to copy: the defaults are built in. To add or override some, mount a folder and
# set SKYWARDEN_POLICIES to it. The data folder holds the key that seals notification secrets:
# keep it on a volume.
ENV SKYWARDEN_LISTEN=0.0.0.0:8080 \
    SKYWARDEN_DATA_DIR=/var/lib/skywarden \
    SKYWARDEN_GEOIP=/usr/share/skywarden/geoip/geo-whois-asn-country.mmdb,/usr/share/skywarden/geoip/asn-ipv4.csv,/usr/share/skywarden/geoip/asn-ipv6.csv
USER 10001:10001
WORKDIR /var/lib/skywarden
EXPOSE 8080
# `serve` answers /healthz on its listen port; a `worker` serves no HTTP, so turn the check off
# for workers (docker-compose.yml does).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${SKYWARDEN_LISTEN##*:}/healthz" || exit 1
ENTRYPOINT ["skywarden"]
CMD ["serve"]
