"""A double for the network boundary of the Earth Engine export (EarthEngineClient) that
behaves like the service: it executes the graphs it is sent (ee_evaluator) on fixture
collections made from local sources, refuses requests beyond the service's limits with the
service's own texts, queues at most 3000 batch tasks, and raises errors the way earthengine-api
does (an EEException raised while handling the HttpError that carries the status). Tests can
script extra failures. Also: reading serialized graphs for assertions."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from affine import Affine

from tests.gee_export.earthengine.ee_evaluator import (
    FLOAT,
    BandSource,
    Catalogue,
    Evaluator,
    EvaluatorFault,
    Feat,
    Grid,
    PixelType,
    ServiceRefusal,
    request_size,
    to_json,
)

REQUEST_LIMIT = 50331648  # computePixels: 48 MiB
PAYLOAD_LIMIT = 10485760  # any request body: 10 MiB
COLLECTION_LIMIT = 5000  # elements of a collection computeValue returns
QUEUE_LIMIT = 3000  # batch tasks queued per project
# The service's texts (public issue threads of Xee, geemap, rgee, geetools).
TOO_BIG = "Total request size ({n} bytes) must be less than or equal to 50331648 bytes."
PAYLOAD = "Request payload size exceeds the limit: 10485760 bytes."
COLLECTION = "Collection query aborted after accumulating over 5000 elements."
TIMEOUT = "Computation timed out."
MEMORY = "User memory limit exceeded."
QUOTA = ("Quota exceeded for quota metric 'Number of read requests' and limit 'Number of "
         "read requests per minute per user' of service 'earthengine.googleapis.com'.")
# Not seen verbatim in public threads; the documented limit, in the service's style.
QUEUE_FULL = "Too many tasks already in the queue (3000). Please wait for some to finish."


def raise_like_ee(status: int, message: str):
    """Raise as earthengine-api does: EEException while handling the HttpError."""
    import ee
    import httplib2
    from googleapiclient.errors import HttpError

    body = json.dumps({"error": {"code": status, "message": message}}).encode()
    try:
        raise HttpError(httplib2.Response({"status": status}), body)
    except HttpError as e:
        raise ee.EEException(e._get_reason())


@dataclass
class Failure:
    """A scripted failure: on requests of `kind` ('value', 'pixels', 'task') for which
    `when(request)` holds, `times` times."""
    kind: str
    when: Callable
    status: int
    message: str
    times: int = 1


@dataclass
class EarthEngineDouble:
    catalogue: Catalogue = field(default_factory=Catalogue)
    project: str = "test-project"
    failures: list = field(default_factory=list)
    value_calls: list = field(default_factory=list)
    pixel_calls: list = field(default_factory=list)
    tasks: dict = field(default_factory=dict)  # id -> {"task", "state", "error"}
    bucket: dict = field(default_factory=dict)  # object name -> local file

    def __post_init__(self):
        self.evaluator = Evaluator(self.catalogue)

    def _scripted(self, kind: str, request) -> None:
        for f in self.failures:
            if f.kind == kind and f.times > 0 and f.when(request):
                f.times -= 1
                raise_like_ee(f.status, f.message)

    def _payload(self, expression) -> None:
        if request_size(expression) > PAYLOAD_LIMIT:
            raise_like_ee(400, PAYLOAD)

    def compute_value(self, obj):
        self.value_calls.append(graph(obj))
        self._payload(obj)
        self._scripted("value", obj)
        try:
            value = self.evaluator.evaluate(obj)
        except ServiceRefusal as e:
            raise_like_ee(e.status, str(e))
        except Exception as e:
            raise EvaluatorFault(f"evaluating a computeValue: {e!r}") from e
        n = len(value) if isinstance(value, list) else len(getattr(value, "elements", []))
        if n > COLLECTION_LIMIT:
            raise_like_ee(400, COLLECTION)
        return to_json(value)

    def compute_pixels(self, params: dict):
        self.pixel_calls.append(params)
        self._payload(params["expression"])
        g = params["grid"]
        dims = g["dimensions"]
        try:
            image = self.evaluator.evaluate(params["expression"])
            bands = params.get("bandIds") or image.names
            nbytes = dims["width"] * dims["height"] * sum(
                image.types[image.names.index(b)].dtype.itemsize if b in image.names else 4
                for b in bands)
            if nbytes > REQUEST_LIMIT:
                raise_like_ee(400, TOO_BIG.format(n=nbytes))
            self._scripted("pixels", g)
            return self.evaluator.compute_pixels(image, request_grid(g), bands)
        except ServiceRefusal as e:
            raise_like_ee(e.status, str(e))
        except Exception as e:
            if type(e).__name__ == "EEException":
                raise
            raise EvaluatorFault(f"evaluating a computePixels: {e!r}") from e

    # -- batch -------------------------------------------------------------------------------
    def start_task(self, task) -> str:
        queued = sum(1 for t in self.tasks.values() if t["state"] in ("READY", "RUNNING"))
        if queued >= QUEUE_LIMIT:
            raise_like_ee(429, QUEUE_FULL)
        self._scripted("task", task)
        tid = f"TASK{len(self.tasks) + 1:05d}"
        self.tasks[tid] = {"task": task, "state": "READY"}
        return tid

    def task_status(self, ids: list[str]) -> list[dict]:
        out = []
        for i in ids:
            t = self.tasks.get(i, {"state": "UNKNOWN"})
            out.append({"id": i, "state": t["state"],
                        **({"error_message": t["error"]} if t.get("error") else {})})
        return out

    def finish_tasks(self, ids=None, fail: dict | None = None, out_dir: Path | None = None):
        """Let queued tasks run: each writes its GeoTIFF (from its own grid, nodata and COG
        options) into the bucket, or fails with the given message."""
        for tid, t in self.tasks.items():
            if t["state"] != "READY" or (ids is not None and tid not in ids):
                continue
            if fail and tid in fail:
                t.update(state="FAILED", error=fail[tid])
                continue
            name, path = self._write_task_file(t["task"], out_dir)
            self.bucket[name] = path
            t["state"] = "COMPLETED"

    def _write_task_file(self, task, out_dir: Path) -> tuple[str, Path]:
        import rasterio

        c = task.config
        opts = c["fileExportOptions"]
        image = self.evaluator.evaluate(c["expression"])
        grid = task_grid(image)
        prefix = (opts.get("cloudStorageDestination") or opts.get("driveDestination"))[
            "filenamePrefix"]
        geotiff = opts.get("geoTiffOptions", {})
        nodata = geotiff.get("noData", {}).get("floatValue")
        data = self.evaluator.compute_pixels(image, grid, image.names)
        arr = np.stack([data[b] for b in image.names]).astype(np.float32)
        path = Path(out_dir) / (prefix.replace("/", "__") + ".tif")
        profile = dict(driver="COG" if geotiff.get("cloudOptimized") else "GTiff",
                       width=grid.width, height=grid.height, count=len(arr), dtype="float32",
                       crs=grid.crs, transform=grid.transform, nodata=nodata)
        with rasterio.open(path, "w", **profile) as f:
            f.write(arr)
        return prefix + ".tif", path

    def download_blob(self, bucket: str, name: str, dest: Path) -> bool:
        if name not in self.bucket:
            return False
        Path(dest).write_bytes(Path(self.bucket[name]).read_bytes())
        return True


def request_grid(g: dict) -> Grid:
    """computePixels' grid: explicit affine and CRS; without an affine, the image's default
    projection, which for a composite is WGS84 at 1 degree (so: the wrong pixels)."""
    d = g["dimensions"]
    t = g.get("affineTransform")
    if t is None:
        return Grid("EPSG:4326", Affine(1.0, 0, 0, 0, -1.0, 0), d["width"], d["height"])
    return Grid(g.get("crsCode", "EPSG:4326"),
                Affine(t["scaleX"], t.get("shearX", 0), t["translateX"], t.get("shearY", 0),
                       t["scaleY"], t["translateY"]), d["width"], d["height"])


def task_grid(image) -> Grid:
    """The grid a batch task writes: reproject()'s crs and crsTransform, clipped to the
    pixel rectangle; without a crsTransform, the crs at 1 km from its origin."""
    crs, transform, scale = image.props["_reproject"]
    geometry, width, height = image.props["_clip"]
    x0, y0, x1, y1 = geometry.shape.bounds if geometry is not None else (0, 0, width, height)
    t = Affine(*transform[:6]) if transform else Affine(scale or 1000.0, 0, 0, 0,
                                                        -(scale or 1000.0), 0)
    return Grid(crs, t * Affine.translation(x0, y0), int(x1 - x0), int(y1 - y0))


# -- fixture collections from the demo sources ------------------------------------------------------

S2_ID, S1_ID, CS_ID = "COPERNICUS/S2_SR_HARMONIZED", "COPERNICUS/S1_GRD", \
    "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
SRTM_ID = "USGS/SRTMGL1_003"
U16 = PixelType("int", 0, 65535)
U8 = PixelType("int", 0, 255)
I16 = PixelType("int", -32768, 32767)


def _millis(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000) \
        + 4 * 3600 * 1000  # acquisitions late morning UTC, as over Qilian


def demo_catalogue(source_dir: Path, year: int, workdir: Path, hma_asset: str = "users/test/hma",
                   decoys: bool = True) -> Catalogue:
    """The demo sources as Earth Engine's collections: Sentinel-2 SR scenes with their scene
    cloud percentage, Cloud Score+ linked by system:index, Sentinel-1 GRD with mode,
    polarisation, resolution and orbit, SRTM, and the HMA mosaic as a user's asset ingested
    without a mask (its -9999 fill is data until the recipe masks it). With decoys, images the
    recipe must not use: Sentinel-2 outside the window or over the scene cloud limit,
    Sentinel-1 in EW mode, single-pol, at 40 m or outside the window; each with other values,
    so that using one changes the stack."""
    from gee_export.local import LocalSources, scene_cloud_percent

    src = LocalSources.scan(source_dir)
    cat = Catalogue()
    s2, cs = [], []
    for day, files in sorted(src.s2.items()):
        s2 += [_s2_image(day, files, scene_cloud_percent(files))]
        cs += [_cs_image(day, src.cloud_score[day])] if day in src.cloud_score else []
    s1 = [_s1_image(day, files[0], i) for i, (day, files) in enumerate(sorted(src.s1.items()))]
    if decoys:
        s2, cs, s1 = _with_decoys(year, src, s2, cs, s1)
    cat.collections.update({S2_ID: s2, CS_ID: cs, S1_ID: s1})
    cat.images[SRTM_ID] = [("elevation", BandSource(src.srtm[0], None, "dem", I16))]
    if src.hma:
        cat.images[hma_asset] = [("b1", BandSource(_unmasked_copy(src.hma[0], workdir), None,
                                                   "none", FLOAT))]
    return cat


def _unmasked_copy(path: Path, workdir: Path) -> Path:
    import shutil

    import rasterio

    copy = Path(workdir) / f"asset_{path.name}"
    shutil.copyfile(path, copy)
    with rasterio.open(copy, "r+") as f:
        f.nodata = None
    return copy


def _s2_image(day: str, files: list[Path], cloud: float | None, adjust=None, index=None):
    ten = next(f for f in files if f.name.endswith("_B10m.tif"))
    twenty = next(f for f in files if f.name.endswith("_B20m.tif"))
    bands = [(b, BandSource(ten, b, "s2", U16, adjust)) for b in ("B2", "B3", "B4", "B8")]
    bands += [("B11", BandSource(twenty, "B11", "s2", U16, adjust)),
              ("SCL", BandSource(twenty, "SCL", "s2", U8))]
    index = index or f"{day.replace('-', '')}T041559_{day.replace('-', '')}T042327_T47SNC"
    return bands, {"system:index": index, "system:time_start": _millis(day),
                   "CLOUDY_PIXEL_PERCENTAGE": cloud, "MGRS_TILE": "47SNC"}


def _cs_image(day: str, files: list[Path], index=None):
    f = files[0]
    index = index or f"{day.replace('-', '')}T041559_{day.replace('-', '')}T042327_T47SNC"
    return ([(b, BandSource(f, b, "cloudscore", FLOAT)) for b in ("cs", "cs_cdf")],
            {"system:index": index, "system:time_start": _millis(day)})


def _s1_image(day: str, path: Path, i: int, adjust=None, **props):
    bands = [(b, BandSource(path, b, "s1", FLOAT, adjust)) for b in ("VV", "VH")]
    meta = {"system:index": f"S1A_IW_GRDH_1SDV_{day.replace('-', '')}T231{i}00", "system:time_start":
            _millis(day), "instrumentMode": "IW", "transmitterReceiverPolarisation": ["VV", "VH"],
            "resolution_meters": 10, "orbitProperties_pass": ("ASCENDING", "DESCENDING")[i % 2]}
    meta.update(props)
    return bands, meta


def _with_decoys(year, src, s2, cs, s1):
    first_s2 = sorted(src.s2.items())[0]
    before, after, cloudy = f"{year}-06-20", f"{year}-10-05", f"{year}-08-30"
    for day, factor, cloud in ((before, 0.8, 0.0), (after, 1.25, 0.0), (cloudy, 0.7, 80.0)):
        idx = f"{day.replace('-', '')}T041559_DECOY_T47SNC"
        s2.append(_s2_image(day, first_s2[1], cloud, lambda a, f=factor: a * f, idx))
        if first_s2[0] in src.cloud_score:
            cs.append(_cs_image(day, src.cloud_score[first_s2[0]], idx))
    day, files = sorted(src.s1.items())[0]
    inside = day
    s1 += [_s1_image(inside, files[0], 7, lambda a: a + 3, instrumentMode="EW"),
           _s1_image(inside, files[0], 8, lambda a: a + 2, resolution_meters=40),
           _s1_image(f"{year}-06-20", files[0], 9, lambda a: a - 2)]
    vv_only = _s1_image(inside, files[0], 6, lambda a: a + 4,
                        transmitterReceiverPolarisation=["VV"])
    s1.append(([vv_only[0][0]], vv_only[1]))
    return s2, cs, s1


def glims_table(frame) -> list[Feat]:
    """A GLIMS-like table (lon/lat features with glac_id, anlys_id, line_type, src_date)."""
    lonlat = frame.to_crs("EPSG:4326")
    return [Feat(g, "EPSG:4326", {k: row[k] for k in lonlat.columns if k != "geometry"})
            for g, (_, row) in zip(lonlat.geometry, lonlat.iterrows())]


# -- reading graphs ---------------------------------------------------------------------------------

@dataclass
class Call:
    name: str
    args: dict


def graph(obj):
    """An ee object's serialized graph as nested Calls, references resolved."""
    import ee

    enc = ee.serializer.encode(obj, for_cloud_api=True)
    values = enc["values"]

    def res(node):
        if "valueReference" in node:
            return res(values[node["valueReference"]])
        if "constantValue" in node:
            return node["constantValue"]
        if "integerValue" in node:
            return int(node["integerValue"])
        if "functionInvocationValue" in node:
            f = node["functionInvocationValue"]
            return Call(f.get("functionName") or "<mapped>",
                        {k: res(v) for k, v in f.get("arguments", {}).items()})
        if "arrayValue" in node:
            return [res(v) for v in node["arrayValue"].get("values", [])]
        if "dictionaryValue" in node:
            return {k: res(v) for k, v in node["dictionaryValue"].get("values", {}).items()}
        if "functionDefinitionValue" in node:
            d = node["functionDefinitionValue"]
            return Call("<function>", {"args": d.get("argumentNames", []),
                                       "body": res(values[d["body"]])})
        if "argumentReference" in node:
            return Call("<arg>", {"name": node["argumentReference"]})
        raise AssertionError(f"unknown node {node}")

    return res(values[enc["result"]])


def calls(tree, name: str) -> list[Call]:
    """Every call of `name` anywhere in a resolved graph."""
    out, stack = [], [tree]
    while stack:
        n = stack.pop()
        if isinstance(n, Call):
            if n.name == name:
                out.append(n)
            stack.extend(n.args.values())
        elif isinstance(n, list):
            stack.extend(n)
        elif isinstance(n, dict):
            stack.extend(n.values())
    return out


