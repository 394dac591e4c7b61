"""Writes a small MaxMind DB (City or Country format) for the GeoIP tests,
with `mmdb-writer`, an implementation that is not ours. Reads a JSON spec on
stdin: {"path", "type", "networks": {CIDR: {"country", "city", "lat", "lon",
"radius"}}} and writes the file at "path" (via a temporary file and a
rename, so a running server never reads half of it)."""
import json
import os
import sys

from mmdb_writer import MMDBWriter, MmdbF64, MmdbU16
from netaddr import IPSet

spec = json.load(sys.stdin)
writer = MMDBWriter(
    ip_version=6,
    ipv4_compatible=True,
    database_type=spec.get("type", "GeoLite2-City"),
    languages=["en"],
    description={"en": "session-server test database"},
)
for network, rec in spec["networks"].items():
    data = {}
    if "country" in rec:
        data["country"] = {"iso_code": rec["country"], "names": {"en": rec["country"]}}
    if "city" in rec:
        data["city"] = {"names": {"en": rec["city"]}}
    if "lat" in rec:
        data["location"] = {
            "latitude": MmdbF64(rec["lat"]),
            "longitude": MmdbF64(rec["lon"]),
            "accuracy_radius": MmdbU16(rec.get("radius", 20)),
        }
    writer.insert_network(IPSet([network]), data)
staged = spec["path"] + ".tmp"
writer.to_db_file(staged)
os.replace(staged, spec["path"])
