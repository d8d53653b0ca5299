#!/usr/bin/env bash
# Install the free GeoIP databases tapstream uses when none is configured:
# ip-location-db's country mmdb (CC BY 4.0 data by NRO) and ASN ranges
# (CSV), from the npm registry, under $XDG_DATA_HOME/tapstream/geoip.
set -euo pipefail
dir="${1:-${XDG_DATA_HOME:-$HOME/.local/share}/tapstream/geoip}"
mkdir -p "$dir"
if [ ! -f "$dir/node_modules/@ip-location-db/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb" ] \
    || [ ! -f "$dir/node_modules/@ip-location-db/asn/asn-ipv4.csv" ]; then
    command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
    npm install --prefix "$dir" --no-audit --no-fund --silent \
        @ip-location-db/geo-whois-asn-country-mmdb @ip-location-db/asn >/dev/null
fi
echo "$dir"
