# Build: queries are checked against the committed .sqlx/ data, so no database is needed here.
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
    && cp package/geo-whois-asn-country.mmdb package/NRO_LICENSE /geoip/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/skywarden --create-home skywarden
COPY --from=build /src/target/release/skywarden /usr/local/bin/skywarden
COPY --from=geoip /geoip/ /usr/share/skywarden/geoip/
USER skywarden
EXPOSE 8080
ENTRYPOINT ["skywarden"]
CMD ["serve"]
