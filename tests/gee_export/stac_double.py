"""A STAC API double on 127.0.0.1 for the STAC source's tests: item search (POST and GET,
paged by a next link as the real APIs page), Planetary Computer's SAS token endpoint, and the
assets themselves as cloud-optimized GeoTIFFs served with HTTP range requests. Faults are
injected by counters: 503s, a slow search, a token that stops being accepted.

Items are published item JSON (tests/data/stac_items, see its README: asset keys,
properties, scaling) with the demo scene's ids, footprints, dates and hrefs; their assets are
the demo's sources rewritten as each provider ships them: one band per file, Sentinel-2 DN
with the processing baseline 04.00 offset of +1000, Sentinel-1 RTC as linear power with -32768
as no data, GLO-30 as float32 heights.
"""
from __future__ import annotations

import json
import threading
import time
from copy import deepcopy
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

ITEMS = Path(__file__).resolve().parents[1] / "data" / "stac_items"
CONFORMS = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
            "https://api.stacspec.org/v1.0.0/item-search#query",
            "https://api.stacspec.org/v1.0.0/item-search#sort"]


class Faults:
    def __init__(self):
        self.search_503 = 0  # the next n searches answer 503
        self.search_delay = (0, 0.0)  # the next n searches answer after s seconds
        self.asset_503 = 0  # the next n asset reads answer 503
        self.expire_after = None  # tokens issued so far are refused after n signed reads
        self.signed_reads = 0
        self.fail_after = None  # every asset read after the first n answers 503 (a dead host)
        self.reads = 0


class StacDouble:
    """Serves `items` (provider prefix -> list of item dicts) and the files under `root`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.items: dict[str, list[dict]] = {}
        self.faults = Faults()
        self.log: list[tuple[str, str]] = []
        self.valid_tokens: set[str] = set()
        self._n = 0
        self.server = _Quiet(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def api(self, prefix: str) -> str:
        return f"{self.url}/{prefix}/api/stac/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def issue_token(self) -> dict:
        self._n += 1
        tok = f"st=2026-01-01&se=2099-01-01&sp=rl&sig=t{self._n}"
        self.valid_tokens.add(tok)
        return {"msft:expiry": "2099-01-01T00:00:00Z", "token": tok}

    def search(self, prefix: str, body: dict, base: str) -> dict:
        found = [it for it in self.items.get(prefix, []) if _matches(it, body)]
        start, limit = int(body.get("token") or 0), int(body.get("limit") or 10)
        page = found[start:start + limit]
        links = [{"rel": "root", "href": base, "type": "application/json"}]
        if start + limit < len(found):
            links.append({"rel": "next", "href": f"{base}/search", "method": "POST",
                          "type": "application/geo+json", "merge": False,
                          "body": {**body, "token": str(start + limit)}})
        return {"type": "FeatureCollection", "features": page, "links": links,
                "numberMatched": len(found), "numberReturned": len(page)}


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that hung up mid-answer
        pass


def _matches(item: dict, body: dict) -> bool:
    if body.get("collections") and item["collection"] not in body["collections"]:
        return False
    if body.get("bbox"):
        w, s, e, n = body["bbox"]
        iw, is_, ie, in_ = item["bbox"]
        if iw > e or ie < w or is_ > n or in_ < s:
            return False
    if body.get("datetime"):
        a, _, b = body["datetime"].partition("/")
        t = _time(item["properties"]["datetime"])
        if (a not in ("", "..") and t < _time(a)) or (b not in ("", "..") and t > _time(b)):
            return False
    ops = {"lt": lambda v, x: v < x, "lte": lambda v, x: v <= x, "gt": lambda v, x: v > x,
           "gte": lambda v, x: v >= x, "eq": lambda v, x: v == x, "neq": lambda v, x: v != x}
    for prop, conds in (body.get("query") or {}).items():
        v = item["properties"].get(prop)
        if v is None or not all(ops[op](v, x) for op, x in conds.items()):
            return False
    return True


def _time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _handler(double: StacDouble) -> type:
    return type("Handler", (_Handler,), {"double": double})


class _Handler(BaseHTTPRequestHandler):
    double: StacDouble

    def log_message(self, *a):
        pass

    def _json(self, obj, status=200):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self, head=False):
        u = urlparse(self.path)
        self.double.log.append(("GET", u.path))
        parts = u.path.strip("/").split("/")
        prefix, rest = parts[0], "/".join(parts[1:])
        base = f"{self.double.url}/{prefix}/api/stac/v1"
        if rest == "api/stac/v1":
            return self._json(_landing(base))
        if rest == "api/stac/v1/search":
            q = parse_qs(u.query)
            body = {k: v[0] for k, v in q.items()}
            for k in ("bbox",):
                if k in body:
                    body[k] = [float(x) for x in body[k].split(",")]
            if "collections" in body:
                body["collections"] = body["collections"].split(",")
            if "query" in body:
                body["query"] = json.loads(body["query"])
            return self._search(prefix, body, base)
        if rest.startswith("api/sas/v1/token/"):
            return self._json(self.double.issue_token())
        if parts[1] == "assets":
            return self._asset(Path(prefix, *parts[2:]), u.query, head)
        self._json({"code": "NotFound"}, 404)

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_POST(self):
        u = urlparse(self.path)
        self.double.log.append(("POST", u.path))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        prefix = u.path.strip("/").split("/")[0]
        self._search(prefix, body, f"{self.double.url}/{prefix}/api/stac/v1")

    def _search(self, prefix, body, base):
        f = self.double.faults
        if f.search_503 > 0:
            f.search_503 -= 1
            return self._json({"code": "ServiceUnavailable"}, 503)
        if f.search_delay[0] > 0:
            f.search_delay = (f.search_delay[0] - 1, f.search_delay[1])
            time.sleep(f.search_delay[1])
        self._json(self.double.search(prefix, body, base))

    def _asset(self, rel: Path, query: str, head: bool):
        f = self.double.faults
        if "signed" in rel.parts:
            tok = query
            if f.expire_after is not None:
                f.signed_reads += 1
                if f.signed_reads == f.expire_after:  # every token so far expires now
                    self.double.valid_tokens.clear()
            if tok not in self.double.valid_tokens:
                return self._json({"code": "AuthenticationFailed"}, 403)
        f.reads += 1
        if f.fail_after is not None and f.reads > f.fail_after:
            return self._json({"code": "ServerBusy"}, 503)
        if f.asset_503 > 0 and not head:
            f.asset_503 -= 1
            return self._json({"code": "ServerBusy"}, 503)
        path = self.double.root / rel
        if not path.is_file():
            return self._json({"code": "BlobNotFound"}, 404)
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range")
        if rng:
            a, _, b = rng.split("=")[1].partition("-")
            start, end = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
        self.send_response(206 if rng else 200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "image/tiff")
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1 if not head else len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data[start:end + 1])


def _landing(base: str) -> dict:
    return {"type": "Catalog", "id": "double", "stac_version": "1.0.0",
            "description": "a STAC API double", "conformsTo": CONFORMS,
            "links": [{"rel": "self", "href": base, "type": "application/json"},
                      {"rel": "root", "href": base, "type": "application/json"},
                      {"rel": "search", "href": f"{base}/search", "method": "POST",
                       "type": "application/geo+json"},
                      {"rel": "search", "href": f"{base}/search", "method": "GET",
                       "type": "application/geo+json"}]}


# -- the demo's sources as each provider ships them -------------------------------------------


def write_cog(path: Path, data: np.ndarray, src_profile: dict, dtype: str, nodata) -> None:
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy

    path.parent.mkdir(parents=True, exist_ok=True)
    prof = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=dtype,
                crs=src_profile["crs"], transform=src_profile["transform"], nodata=nodata,
                tiled=True, blockxsize=256, blockysize=256)
    with MemoryFile() as mem:
        with mem.open(**prof) as dst:
            dst.write(data.astype(dtype), 1)
        with mem.open() as src:
            copy(src, str(path), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256)
    assert rasterio.open(path).count == 1


def template(name: str) -> dict:
    return json.loads((ITEMS / name).read_text())


S2_KEYS = {"pc": ("B02", "B03", "B04", "B08", "B11", "SCL"),
           "es": ("blue", "green", "red", "nir", "swir16", "scl")}


def _footprint(path: Path) -> tuple[list, dict]:
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        b = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    geom = {"type": "Polygon", "coordinates": [[[b[0], b[1]], [b[2], b[1]], [b[2], b[3]],
                                                [b[0], b[3]], [b[0], b[1]]]]}
    return list(b), geom


TEMPLATES = {("pc", "sentinel-2-l2a"): "pc-sentinel-2-l2a.json",
             ("es", "sentinel-2-l2a"): "stactools-sentinel2-l2a-N0400.json",
             "sentinel-1-rtc": "stactools-sentinel1-grd-iw.json",
             "cop-dem-glo-30": "stactools-cop-dem-glo-30.json"}


def _item(name: str, item_id: str, dt: str, path: Path, hrefs: dict, **props) -> dict:
    """A template item (tests/data/stac_items) for one demo scene: its id, footprint, time,
    the hrefs of the assets the recipe reads and `props` set."""
    it = deepcopy(template(name))
    it["id"], (it["bbox"], it["geometry"]) = item_id, _footprint(path)
    it["properties"].update(datetime=dt, **props)
    if "start_datetime" in it["properties"]:
        it["properties"].update(start_datetime=dt, end_datetime=dt)
    for k, h in hrefs.items():
        it["assets"][k]["href"] = h
    return it


def publish(double: StacDouble, demo: Path, prefix: str, year: int) -> None:
    """The demo sources of `year` in `demo` as provider `prefix`'s items and COGs ('pc' or
    'es'): under double.root/prefix, served at double.url/prefix/assets."""
    import rasterio

    from gee_export.demo.sensors import S1_DATES, S2_DATES
    from gee_export.local import scene_cloud_percent

    out, base = double.root / prefix, f"{double.url}/{prefix}/assets"
    signed = "signed/" if prefix == "pc" else ""
    items = []
    for i, d in enumerate(S2_DATES):
        f10, f20 = demo / f"S2_{year}-{d}_B10m.tif", demo / f"S2_{year}-{d}_B20m.tif"
        applied = prefix == "es" and i == 0  # Earth Search already removed the offset here
        hrefs = {}
        for key, (f, band) in zip(S2_KEYS[prefix], [(f10, 1), (f10, 2), (f10, 3), (f10, 4),
                                                   (f20, 1), (f20, 2)]):
            with rasterio.open(f) as src:
                a = src.read(band).astype(np.int32)
                if key.lower() != "scl" and not applied:
                    a = np.where(a != 0, a + 1000, 0)  # baseline 04.00: BOA_ADD_OFFSET -1000
                rel = f"{signed}s2/{year}-{d}/{key}.tif"
                write_cog(out / rel, a, src.profile, "uint16" if key.lower() != "scl" else
                          "uint8", 0)
            hrefs[key] = f"{base}/{rel}"
        props = {"eo:cloud_cover": round(scene_cloud_percent([f10, f20]), 4)}
        if prefix == "es":
            props["earthsearch:boa_offset_applied"] = applied
        it = _item(TEMPLATES[prefix, "sentinel-2-l2a"], f"S2A_44SMD_{year}{d.replace('-', '')}"
                   f"_0_L2A", f"{year}-{d}T05:26:51.024000Z", f10, hrefs, **props)
        items.append({**it, "collection": "sentinel-2-l2a"})
    for i, d in enumerate(S1_DATES):
        f = demo / f"S1_{year}-{d}_dB.tif"
        hrefs = {}
        with rasterio.open(f) as src:
            for key, band in (("vv", 1), ("vh", 2)):
                db = src.read(band).astype(np.float64)
                lin = np.where(db != 0, 10 ** (db / 10), -32768).astype(np.float32)
                rel = f"signed/s1/{year}-{d}/{key}.tif"
                write_cog(out / rel, lin, src.profile, "float32", -32768)
                hrefs[key] = f"{base}/{rel}"
        items.append(_s1_item(year, d, i, f, hrefs))
    f = demo / "DEM_SRTM.tif"
    with rasterio.open(f) as src:
        rel = f"{signed}dem/N36E078.tif"
        write_cog(out / rel, src.read(1).astype(np.float32), src.profile, "float32", -32768)
    items.append(_item(TEMPLATES["cop-dem-glo-30"], "Copernicus_DSM_COG_10_N36_00_E078_00_DEM",
                       "2021-04-22T00:00:00Z", f, {"data": f"{base}/{rel}"}))
    double.items[prefix] = items


def _s1_item(year: int, d: str, i: int, f: Path, hrefs: dict) -> dict:
    """Planetary Computer's sentinel-1-rtc items keep the GRD items' assets vv and vh and
    their sar/sat properties; their COGs hold float32 gamma0 with -32768 as no data."""
    it = _item(TEMPLATES["sentinel-1-rtc"], f"S1A_IW_GRDH_1SDV_{year}{d.replace('-', '')}"
               f"T004512_rtc", f"{year}-{d}T00:45:24Z", f, hrefs,
               **{"sat:orbit_state": ("ascending", "descending")[i % 2]})
    for key in ("vv", "vh"):
        it["assets"][key].update(type="image/tiff; application=geotiff; profile=cloud-optimized",
                                 **{"raster:bands": [{"nodata": -32768, "data_type": "float32"}]})
    return {**it, "collection": "sentinel-1-rtc"}


def serve_demo(root: Path, year: int, size: int, providers: tuple[str, ...]
               ) -> tuple[StacDouble, Path]:
    """The demo's sources of `year` written under root and published by a double for each
    provider layout given; the caller closes the double."""
    from gee_export.demo.sources import write_demo_sources

    demo = write_demo_sources(root / "demo", year, size=size)
    double = StacDouble(root / "served")
    for provider in providers:
        publish(double, demo, provider, year)
    return double, demo
