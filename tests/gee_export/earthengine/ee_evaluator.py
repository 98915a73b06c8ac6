"""An offline Earth Engine: executes the serialized graphs the recipe builds with numpy and
rasterio, on fixture collections made from local sources.

Test support. Each algorithm follows Earth Engine's documented semantics, with a one-line
reference to its documentation page; arguments a graph leaves out take the defaults of the
function catalogue earthengine-api ships. A graph that uses an algorithm this module lacks
fails loudly (EvaluatorGap), never silently.

The model, in short:
- An image is lazy: asked for its pixels on a grid (CRS, affine, size), it returns values, a
  mask per band and a pixel type per band. Loaded images sample their files by nearest
  neighbour, as Earth Engine reprojects by default.
- `resample` changes that: its input is computed on its own (native) grid, then interpolated
  onto the requested one. Operations below a `resample` therefore run on the source's grid,
  as they do on Earth Engine. Interpolation is the local path's (`gee_export.local.placer`),
  whose masked-bilinear semantics are pinned to GDAL's warper by the local tests.
- Pixel-wise operations combine masks by intersection; `unmask` fills only masked pixels (and
  with sameFootprint only inside the input's footprint); composites ignore masked pixels.
- Pixel types follow Earth Engine's union rule, so an integer division truncates and a
  missing toFloat() leaves doubles.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
from affine import Affine

DOCS = "https://developers.google.com/earth-engine/apidocs/"
INF = float("inf")


class EvaluatorGap(NotImplementedError):
    """The graph uses an algorithm (or an argument) the evaluator does not model."""


class EvaluatorFault(BaseException):
    """An evaluator bug or gap surfacing through the double: a BaseException, so that no
    retry or error policy in the code under test can take it for a service answer."""


class ServiceRefusal(Exception):
    """What Earth Engine would answer with an error: (HTTP status, the service's text)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# -- values ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PixelType:
    """Earth Engine's pixel types, as far as they matter here: 'int' (with a range), 'float'
    (32-bit) or 'double'."""
    precision: str
    lo: float = -INF
    hi: float = INF

    def union(self, other: "PixelType") -> "PixelType":
        order = ("int", "float", "double")
        p = max(self.precision, other.precision, key=order.index)
        return PixelType(p, min(self.lo, other.lo), max(self.hi, other.hi))

    @property
    def dtype(self) -> np.dtype:
        if self.precision == "double":
            return np.dtype("float64")
        if self.precision == "float":
            return np.dtype("float32")
        for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32"):
            info = np.iinfo(t)
            if info.min <= self.lo and self.hi <= info.max:
                return np.dtype(t)
        return np.dtype("int64")


BOOL = PixelType("int", 0, 1)
FLOAT = PixelType("float")
DOUBLE = PixelType("double")


def const_type(v) -> PixelType:
    return PixelType("int", v, v) if isinstance(v, int) and not isinstance(v, bool) else DOUBLE


@dataclass(frozen=True)
class Grid:
    """A pixel grid: what computePixels asks for, or a source's own lattice."""
    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def key(self):
        return (self.crs, tuple(self.transform)[:6], self.width, self.height)

    def as_cell(self):
        """The (grid, cell) pair gee_export.local's resampling takes."""
        from gee_export.common.grid import Cell

        t = self.transform
        grid = SimpleNamespace(crs=self.crs, transform=t, x0=t.c, y0=t.f, res=t.a)
        return grid, Cell(0, 0, 0, 0, self.height, self.width)

    def centres(self, crs: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        xs, ys = self.transform * (cols, rows)
        if crs is not None and crs != self.crs:
            from pyproj import Transformer

            xs, ys = Transformer.from_crs(self.crs, crs, always_xy=True).transform(xs, ys)
        return xs, ys


@dataclass
class Raster:
    names: list[str]
    data: np.ndarray  # (bands, h, w) float64
    mask: np.ndarray  # (bands, h, w) bool
    types: list[PixelType]

    def band(self, i: int) -> "Raster":
        return Raster([self.names[i]], self.data[i:i + 1], self.mask[i:i + 1], [self.types[i]])


@dataclass
class Img:
    """A lazy image. `native(i)` is band i's own grid (file lattice and shape) or None;
    `footprint(grid)` where the image exists; `render(grid)` its pixels there."""
    names: list[str]
    types: list[PixelType]
    props: dict
    _render: Callable[[Grid], Raster]
    native: Callable[[int], Grid | None] = lambda i: None
    footprint: Callable[[Grid], np.ndarray] = None  # None: everywhere
    geometry: object = None  # shapely footprint in lon/lat, for filterBounds and geometry()
    _memo: dict = field(default_factory=dict, repr=False)

    def render(self, grid: Grid) -> Raster:
        if grid.key not in self._memo:
            r = self._render(grid)
            assert r.data.shape == (len(self.names), grid.height, grid.width), (self.names, r.data.shape)
            self._memo = {grid.key: r}  # a request renders each node on few grids: keep one
        return self._memo[grid.key]

    def covered(self, grid: Grid) -> np.ndarray:
        if self.footprint is None:
            return np.ones((grid.height, grid.width), bool)
        return self.footprint(grid)


def derived(src: Img, names, types, fn: Callable[[Grid], Raster], props=None,
            keep_native: bool = True) -> Img:
    """An image computed from `src`, keeping its grids, footprint and geometry."""
    return Img(list(names), list(types), dict(src.props if props is None else props), fn,
               src.native if keep_native else (lambda i: None), src.footprint, src.geometry)


@dataclass
class Coll:
    elements: list
    props: dict = field(default_factory=dict)


@dataclass
class Feat:
    geometry: object  # shapely, in `crs`
    crs: str
    props: dict


@dataclass
class Geom:
    shape: object  # shapely
    crs: str

    def to(self, crs: str):
        if crs == self.crs:
            return self.shape
        import shapely
        from pyproj import Transformer

        t = Transformer.from_crs(self.crs, crs, always_xy=True)
        return shapely.ops.transform(lambda x, y, z=None: t.transform(x, y),
                                     self.shape.segmentize(_segment(self.crs)))


def _segment(crs: str) -> float:
    return 0.01 if crs == "EPSG:4326" else 500.0


@dataclass
class Reducer:
    kind: str
    params: dict = field(default_factory=dict)


@dataclass
class Closure:
    args: list[str]
    body: str
    values: dict


# -- the catalogue of fixture data -----------------------------------------------------------------

@dataclass
class BandSource:
    """One band of a fixture image: a file (and the band's description in it, None for band
    1), the kind of source (for its nodata defaults), its pixel type, and an optional change
    of its values (decoys)."""
    path: Path
    description: str | None
    kind: str
    ptype: PixelType
    adjust: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass
class Catalogue:
    images: dict[str, list[tuple[str, BandSource]]] = field(default_factory=dict)
    image_props: dict[str, dict] = field(default_factory=dict)
    collections: dict[str, list[tuple[list[tuple[str, BandSource]], dict]]] = \
        field(default_factory=dict)
    tables: dict[str, list[Feat]] = field(default_factory=dict)


def file_image(bands: list[tuple[str, BandSource]], props: dict) -> Img:
    """An image loaded from files: each band sampled by nearest neighbour on any grid (Earth
    Engine's default reprojection), masked where its file has no data."""
    import rasterio
    from shapely.geometry import box
    from shapely.ops import unary_union

    from gee_export.local import read_source

    info = {}
    for name, b in bands:
        with rasterio.open(b.path) as f:
            info[name] = (Grid(f.crs.to_string(), f.transform, f.width, f.height), f.bounds,
                          f.crs.to_string())
    lonlat = unary_union([Geom(box(*bd), crs).to("EPSG:4326") for _, bd, crs in info.values()])

    def render(grid: Grid) -> Raster:
        g, cell = grid.as_cell()
        data = np.empty((len(bands), grid.height, grid.width))
        for i, (name, b) in enumerate(bands):
            got = read_source(b.path, b.kind, g, cell, [b.description] if b.description else
                              None, "nearest")[0]
            a = next(iter(got.values())).astype(np.float64)
            data[i] = b.adjust(a) if b.adjust else a
        mask = np.isfinite(data)
        return Raster([n for n, _ in bands], np.nan_to_num(data), mask, [b.ptype for _, b in bands])

    def footprint(grid: Grid) -> np.ndarray:
        out = np.zeros((grid.height, grid.width), bool)
        for native, bd, crs in info.values():
            xs, ys = grid.centres(crs)
            out |= (xs >= bd.left) & (xs <= bd.right) & (ys >= bd.bottom) & (ys <= bd.top)
        return out

    return Img([n for n, _ in bands], [b.ptype for _, b in bands], dict(props), render,
               lambda i: info[bands[i][0]][0], footprint, lonlat)


# -- the evaluator ------------------------------------------------------------------------------

ALGORITHMS: dict[str, Callable] = {}
DOC: dict[str, str] = {}


def algorithm(name: str, doc: str):
    """Register the implementation of an Earth Engine algorithm, with its documentation page
    and the rule it follows."""
    def register(fn):
        ALGORITHMS[name] = fn
        DOC[name] = doc
        return fn
    return register


class Evaluator:
    """Executes serialized graphs on a catalogue of fixture data."""

    def __init__(self, catalogue: Catalogue):
        import ee.apitestcase

        self.catalogue = catalogue
        self.signatures = ee.apitestcase.GetAlgorithms()
        self.used: set[str] = set()

    def evaluate(self, obj):
        import ee

        enc = ee.serializer.encode(obj, for_cloud_api=True)
        return self._value(enc["result"], enc["values"], {}, {})

    def _value(self, key: str, values: dict, env: dict, cache: dict):
        if key not in cache:
            cache[key] = self._node(values[key], values, env, cache)
        return cache[key]

    def _node(self, node: dict, values: dict, env: dict, cache: dict):
        if "valueReference" in node:
            return self._value(node["valueReference"], values, env, cache)
        if "constantValue" in node:
            return node["constantValue"]
        if "integerValue" in node:
            return int(node["integerValue"])
        if "arrayValue" in node:
            return [self._node(v, values, env, cache) for v in node["arrayValue"].get("values", [])]
        if "dictionaryValue" in node:
            return {k: self._node(v, values, env, cache)
                    for k, v in node["dictionaryValue"].get("values", {}).items()}
        if "argumentReference" in node:
            return env[node["argumentReference"]]
        if "functionDefinitionValue" in node:
            d = node["functionDefinitionValue"]
            return Closure(d.get("argumentNames", []), d["body"], values)
        if "functionInvocationValue" in node:
            f = node["functionInvocationValue"]
            if "functionName" not in f:
                raise EvaluatorGap("calls of function values are not modelled")
            args = {k: self._node(v, values, env, cache) for k, v in f.get("arguments", {}).items()}
            return self.call(f["functionName"], args)
        raise EvaluatorGap(f"graph node {list(node)} is not modelled")

    def call(self, name: str, args: dict):
        if name not in ALGORITHMS:
            raise EvaluatorGap(f"the evaluator lacks Earth Engine algorithm {name!r}")
        sig = self.signatures.get(name)
        if sig is not None:
            known = {a["name"] for a in sig["args"]}
            unknown = set(args) - known
            if unknown:
                raise EvaluatorGap(f"{name}: arguments {sorted(unknown)} are not in the catalogue")
            for a in sig["args"]:
                if a["name"] not in args and a.get("optional"):
                    args[a["name"]] = a.get("default")
        self.used.add(name)
        return ALGORITHMS[name](self, **args)

    def apply(self, fn: Closure, *elements):
        env = dict(zip(fn.args, elements))
        return self._value(fn.body, fn.values, env, {})

    # -- what the network double asks for ------------------------------------------------------
    def compute_pixels(self, image: Img, grid: Grid, band_ids: list[str]) -> np.ndarray:
        """computePixels' NUMPY_NDARRAY: a structured (h, w) array, one field per band in the
        band's pixel type; masked pixels come back as 0."""
        r = image.render(grid)
        missing = [b for b in band_ids if b not in r.names]
        if missing:
            raise ServiceRefusal(400, f"Image.select: Pattern '{missing[0]}' did not match "
                                      "any bands.")
        out = np.zeros((grid.height, grid.width),
                       dtype=[(b, r.types[r.names.index(b)].dtype) for b in band_ids])
        for b in band_ids:
            i = r.names.index(b)
            out[b] = np.where(r.mask[i], r.data[i], 0)
        return out


def to_json(value):
    """A computed value as computeValue returns it (collections as GeoJSON, lon/lat)."""
    if isinstance(value, Coll):
        return {"type": "FeatureCollection", "features": [to_json(e) for e in value.elements]}
    if isinstance(value, Feat):
        g = Geom(value.geometry, value.crs).to("EPSG:4326") if value.geometry is not None \
            else None
        return {"type": "Feature", "geometry": g.__geo_interface__ if g is not None else None,
                "properties": {k: to_json(v) for k, v in value.props.items()}}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Img, Reducer, Closure)):
        raise EvaluatorGap(f"computeValue of a {type(value).__name__} is not modelled")
    return value


# -- images: loading, bands, arithmetic -------------------------------------------------------

@algorithm("Image.load", DOCS + "ee-image-load: an image asset by id")
def _image_load(ev, id, version=None):
    entry = ev.catalogue.images.get(id)
    if entry is None:
        raise ServiceRefusal(400, f"Image.load: Image asset '{id}' not found (does not exist "
                                  "or caller does not have access).")
    return file_image(entry, ev.catalogue.image_props.get(id, {}))


@algorithm("Image.constant", DOCS + "ee-image-constant: a constant image, one band per value "
           "(named constant, or constant_N for a list), valid everywhere")
def _image_constant(ev, value):
    vals = value if isinstance(value, list) else [value]
    names = ["constant"] if not isinstance(value, list) else [f"constant_{i}" for i in
                                                               range(len(vals))]
    types = [const_type(v) for v in vals]

    def render(grid: Grid) -> Raster:
        data = np.stack([np.full((grid.height, grid.width), float(v)) for v in vals])
        return Raster(names, data, np.ones(data.shape, bool), types)

    return Img(names, types, {}, render)


def _as_image(v) -> Img:
    return v if isinstance(v, Img) else _image_constant(None, v)


@algorithm("Image.select", DOCS + "ee-image-select: bands by name or index, optionally renamed")
def _image_select(ev, input, bandSelectors, newNames=None):
    idx = []
    for s in bandSelectors if isinstance(bandSelectors, list) else [bandSelectors]:
        if isinstance(s, int):
            if s >= len(input.names):
                raise ServiceRefusal(400, f"Image.select: Band index {s} out of range.")
            idx.append(s)
        elif s in input.names:
            idx.append(input.names.index(s))
        else:
            raise ServiceRefusal(400, f"Image.select: Pattern '{s}' did not match any bands.")
    names = newNames or [input.names[i] for i in idx]

    def render(grid):
        r = input.render(grid)
        return Raster(list(names), r.data[idx], r.mask[idx], [r.types[i] for i in idx])

    out = derived(input, names, [input.types[i] for i in idx], render)
    out.native = lambda i: input.native(idx[i])
    return out


@algorithm("Image.rename", DOCS + "ee-image-rename: new band names, one per band")
def _image_rename(ev, input, names):
    if len(names) != len(input.names):
        raise ServiceRefusal(400, f"Image.rename: The number of names ({len(names)}) must "
                                  f"match the number of bands ({len(input.names)}).")

    def render(grid):
        r = input.render(grid)
        return Raster(list(names), r.data, r.mask, r.types)

    return derived(input, names, input.types, render)


@algorithm("Image.addBands", DOCS + "ee-image-addbands: the bands of srcImg after dstImg's; "
           "with overwrite, srcImg's replace same-named ones, else duplicates get _1, _2...")
def _image_add_bands(ev, dstImg, srcImg, names=None, overwrite=False):
    src_names = list(srcImg.names if names is None else names)
    if overwrite:
        keep = [i for i, n in enumerate(dstImg.names) if n not in src_names]
        dst = _image_select(ev, dstImg, keep) if len(keep) < len(dstImg.names) else dstImg
        out_names = dst.names + src_names
    else:
        dst, out_names = dstImg, list(dstImg.names)
        for n in src_names:
            k, new = 0, n
            while new in out_names:
                k += 1
                new = f"{n}_{k}"
            out_names.append(new)

    def render(grid):
        a, b = dst.render(grid), srcImg.render(grid)
        return Raster(list(out_names), np.concatenate([a.data, b.data]),
                      np.concatenate([a.mask, b.mask]), a.types + b.types)

    n = len(dst.names)
    out = derived(dstImg, out_names, dst.types + srcImg.types, render)
    out.native = lambda i: dst.native(i) if i < n else srcImg.native(i - n)
    return out


def _binary(name: str, op: Callable, out_type: Callable[[PixelType, PixelType], PixelType]):
    """A pixel-wise operation on matched band pairs: a one-band input is used against every
    band of the other, else bands pair in order; the output is named after the longer input
    (image1's when equal), its mask is the intersection of the inputs' masks."""
    def run(ev, image1, image2):
        a, b = _as_image(image1), _as_image(image2)
        if len(a.names) != len(b.names) and 1 not in (len(a.names), len(b.names)):
            raise ServiceRefusal(400, f"{name}: Images must contain the same number of bands "
                                      f"or only 1 band. Got {len(a.names)} and {len(b.names)}.")
        n = max(len(a.names), len(b.names))
        names = a.names if len(a.names) == n else b.names
        ia = [i if len(a.names) > 1 else 0 for i in range(n)]
        ib = [i if len(b.names) > 1 else 0 for i in range(n)]
        types = [out_type(a.types[i], b.types[j]) for i, j in zip(ia, ib)]

        def render(grid):
            ra, rb = a.render(grid), b.render(grid)
            with np.errstate(all="ignore"):
                if len(set(types)) == 1:  # one type: all bands in one vectorized operation
                    data = op(ra.data[ia], rb.data[ib], types[0])
                else:
                    data = np.stack([op(ra.data[i], rb.data[j], types[k])
                                     for k, (i, j) in enumerate(zip(ia, ib))])
            mask = ra.mask[ia] & rb.mask[ib]
            return Raster(list(names), data, mask, types)

        src = a if len(a.names) == n else b
        out = derived(src, names, types, render)
        return out
    return run


def _div(x, y, t):
    """Earth Engine's divide: 0 where the divisor is 0; integer division truncates."""
    q = np.where(y == 0, 0.0, x / np.where(y == 0, 1, y))
    return np.trunc(q) if t.precision == "int" else q


def _cast(t: PixelType, v: np.ndarray) -> np.ndarray:
    return v.astype(t.dtype).astype(np.float64)


def _range_type(combine: Callable[[float, float], float]):
    """The type of an arithmetic result: the union's precision; for integers, the range the
    operation can reach from the inputs' ranges."""
    def out(a: PixelType, b: PixelType) -> PixelType:
        t = a.union(b)
        if t.precision != "int":
            return t
        with np.errstate(all="ignore"):
            ends = [combine(x, y) for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
        return PixelType("int", min(ends), max(ends))
    return out


for _name, _op, _t in [
        ("Image.add", lambda x, y, t: _cast(t, x + y), _range_type(lambda x, y: x + y)),
        ("Image.subtract", lambda x, y, t: _cast(t, x - y), _range_type(lambda x, y: x - y)),
        ("Image.multiply", lambda x, y, t: _cast(t, x * y), _range_type(lambda x, y: x * y)),
        ("Image.divide", lambda x, y, t: _cast(t, _div(x, y, t)), PixelType.union),
        ("Image.gt", lambda x, y, t: (x > y) * 1.0, lambda a, b: BOOL),
        ("Image.gte", lambda x, y, t: (x >= y) * 1.0, lambda a, b: BOOL),
        ("Image.lt", lambda x, y, t: (x < y) * 1.0, lambda a, b: BOOL),
        ("Image.lte", lambda x, y, t: (x <= y) * 1.0, lambda a, b: BOOL),
        ("Image.eq", lambda x, y, t: (x == y) * 1.0, lambda a, b: BOOL),
        ("Image.neq", lambda x, y, t: (x != y) * 1.0, lambda a, b: BOOL),
        ("Image.and", lambda x, y, t: ((x != 0) & (y != 0)) * 1.0, lambda a, b: BOOL),
        ("Image.or", lambda x, y, t: ((x != 0) | (y != 0)) * 1.0, lambda a, b: BOOL)]:
    algorithm(_name, DOCS + f"ee-image-{_name.split('.')[1].lower()}: pixel-wise on matched "
              "bands, masks intersected, output type the union of the inputs' (booleans for "
              "comparisons)")(_binary(_name, _op, _t))


def _unary(name: str, op: Callable, out_type: Callable[[PixelType], PixelType], doc: str):
    def run(ev, value):
        types = [out_type(t) for t in value.types]

        def render(grid):
            r = value.render(grid)
            with np.errstate(all="ignore"):
                data = np.stack([op(r.data[i], types[i]) for i in range(len(types))])
            return Raster(r.names, data, r.mask, types)

        return derived(value, value.names, types, render)
    algorithm(name, doc)(run)


_unary("Image.not", lambda x, t: (x == 0) * 1.0, lambda t: BOOL,
       DOCS + "ee-image-not: 1 where the input is zero, mask kept")
_unary("Image.toFloat", lambda x, t: x.astype(np.float32).astype(np.float64), lambda t: FLOAT,
       DOCS + "ee-image-tofloat: cast to 32-bit float")
_unary("Image.byte", lambda x, t: np.clip(np.round(x), 0, 255), lambda t: PixelType("int", 0, 255),
       DOCS + "ee-image-byte: cast to unsigned 8-bit, values clamped to 0-255")


@algorithm("Image.clamp", DOCS + "ee-image-clamp: values clamped to [low, high], mask kept")
def _image_clamp(ev, input, low, high):
    def render(grid):
        r = input.render(grid)
        return Raster(r.names, np.clip(r.data, low, high), r.mask, r.types)

    return derived(input, input.names, input.types, render)


@algorithm("Image.normalizedDifference", DOCS + "ee-image-normalizeddifference: (first - "
           "second) / (first + second), band 'nd'; masked where an input is masked or negative")
def _image_nd(ev, input, bandNames=None):
    names = bandNames or input.names[:2]
    ia, ib = (input.names.index(n) for n in names)

    def render(grid):
        r = input.render(grid)
        a, b = r.data[ia], r.data[ib]
        with np.errstate(all="ignore"):
            nd = (a - b) / (a + b)
        mask = r.mask[ia] & r.mask[ib] & (a >= 0) & (b >= 0) & np.isfinite(nd)
        return Raster(["nd"], np.nan_to_num(nd)[None], mask[None], [FLOAT])

    return derived(input, ["nd"], [FLOAT], render, props={})


@algorithm("Image.reduce", DOCS + "ee-image-reduce: a reducer across the bands of each pixel")
def _image_reduce(ev, image, reducer):
    fn = {"min": np.min, "max": np.max, "sum": np.sum, "mean": np.mean}.get(reducer.kind)
    if fn is None:
        raise EvaluatorGap(f"Image.reduce with {reducer.kind!r} is not modelled")
    t = image.types[0]
    for u in image.types[1:]:
        t = t.union(u)

    def render(grid):
        r = image.render(grid)
        data = np.where(r.mask, r.data, np.nan)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = {"min": np.nanmin, "max": np.nanmax, "sum": np.nansum,
                       "mean": np.nanmean}[reducer.kind](data, axis=0)
        mask = r.mask.any(axis=0)
        return Raster([reducer.kind], np.nan_to_num(out)[None], mask[None], [t])

    return derived(image, [reducer.kind], [t], render)


# -- masks ---------------------------------------------------------------------------------------

@algorithm("Image.mask", DOCS + "ee-image-mask: the image's mask as an image (1 valid, 0 "
           "masked), valid everywhere")
def _image_mask(ev, image, mask=None):
    if mask is not None:
        return _image_update_mask(ev, image, mask)

    def render(grid):
        r = image.render(grid)
        return Raster(r.names, r.mask * 1.0, np.ones(r.mask.shape, bool), [BOOL] * len(r.names))

    return derived(image, image.names, [BOOL] * len(image.names), render)


@algorithm("Image.updateMask", DOCS + "ee-image-updatemask: masks pixels where the mask image "
           "is zero or masked; a one-band mask applies to every band")
def _image_update_mask(ev, image, mask):
    mask = _as_image(mask)
    n = len(image.names)
    if len(mask.names) not in (1, n):
        raise ServiceRefusal(400, "Image.updateMask: Mask must have the same number of bands "
                                  "as the image or only 1 band.")

    def render(grid):
        r, m = image.render(grid), mask.render(grid)
        mi = [0] * n if len(mask.names) == 1 else list(range(n))
        keep = m.mask[mi] & (m.data[mi] != 0)
        return Raster(r.names, r.data, r.mask & keep, r.types)

    return derived(image, image.names, image.types, render)


@algorithm("Image.unmask", DOCS + "ee-image-unmask: masked pixels take the value (and mask) of "
           "another image, cast to the input's types (it keeps its metadata); with "
           "sameFootprint only inside the input's footprint")
def _image_unmask(ev, input, value=None, sameFootprint=True):
    other = _as_image(0 if value is None else value)

    def render(grid):
        r, o = input.render(grid), other.render(grid)
        oi = [0] * len(r.names) if len(o.names) == 1 else list(range(len(r.names)))
        fill = ~r.mask
        if sameFootprint:
            fill &= input.covered(grid)[None]
        data = np.where(fill, o.data[oi], r.data)
        data = np.stack([_cast(t, d) for t, d in zip(r.types, data)])
        mask = np.where(fill, o.mask[oi], r.mask)
        return Raster(r.names, data, mask, r.types)

    out = derived(input, input.names, input.types, render)
    if not sameFootprint:
        out.footprint = None
    return out


# -- grids: resample, paint, reproject ------------------------------------------------------------

@algorithm("Image.resample", DOCS + "ee-image-resample: computes the input on its own grid, "
           "then interpolates (bilinear/bicubic) onto the requested grid")
def _image_resample(ev, image, mode="bilinear"):
    from gee_export.local import placer, source_window

    if mode not in ("bilinear", "bicubic"):
        raise ServiceRefusal(400, f"Image.resample: Unknown resampling mode '{mode}'.")
    if mode == "bicubic":
        raise EvaluatorGap("bicubic resampling is not modelled")

    def render(grid):
        g, cell = grid.as_cell()
        data = np.zeros((len(image.names), grid.height, grid.width))
        mask = np.zeros(data.shape, bool)
        types = list(image.types)
        by_native: dict = {}
        for i in range(len(image.names)):
            by_native.setdefault(image.native(i), []).append(i)
        for native, idx in by_native.items():
            if native is None:  # a computed image has no grid of its own: nothing to resample
                r = image.render(grid)
                data[idx], mask[idx] = r.data[idx], r.mask[idx]
                continue
            window, covers = source_window(native.crs, native.transform,
                                           (native.height, native.width), g, cell)
            if window is None:
                continue
            wt = native.transform * Affine.translation(window.col_off, window.row_off)
            r = image.render(Grid(native.crs, wt, window.width, window.height))
            vals = np.where(r.mask[idx], r.data[idx], np.nan).astype(np.float32)
            out = placer(native.crs, wt, g, cell, covers)(vals, mode)
            data[idx], mask[idx] = np.nan_to_num(out), np.isfinite(out)
        return Raster(list(image.names), data, mask, types)

    return derived(image, image.names, image.types, render)


@algorithm("Image.paint", DOCS + "ee-image-paint: the color where a feature covers a pixel "
           "(its centre), every band")
def _image_paint(ev, image, featureCollection, color=0, width=None):
    if width is not None:
        raise EvaluatorGap("painting outlines (width) is not modelled")
    from rasterio.features import rasterize

    def render(grid):
        r = image.render(grid)
        shapes = [Geom(f.geometry, f.crs).to(grid.crs) for f in featureCollection.elements]
        inside = rasterize(((s, 1) for s in shapes), out_shape=(grid.height, grid.width),
                           transform=grid.transform, fill=0, dtype="uint8").astype(bool) \
            if shapes else np.zeros((grid.height, grid.width), bool)
        data = np.where(inside[None], float(color), r.data)
        return Raster(r.names, data, r.mask | inside[None], r.types)

    return derived(image, image.names, [t.union(const_type(color)) for t in image.types], render)


@algorithm("Image.reproject", DOCS + "ee-image-reproject: forces the computation onto the given "
           "crs and crsTransform (or scale)")
def _image_reproject(ev, image, crs, crsTransform=None, scale=None):
    out = derived(image, image.names, image.types, image.render)
    out.props = dict(image.props, _reproject=(crs, crsTransform, scale))
    return out


@algorithm("Image.setDefaultProjection", DOCS + "ee-image-setdefaultprojection: the projection "
           "(crs and crsTransform, or scale) the image is computed in by default")
def _image_set_default_projection(ev, image, crs, crsTransform=None, scale=None):
    return _image_reproject(ev, image, crs, crsTransform, scale)


@algorithm("Image.projection", DOCS + "ee-image-projection: the image's projection (here, the "
           "one reproject() set)")
def _image_projection(ev, image):
    crs, transform, scale = image.props.get("_reproject", ("EPSG:4326", None, 1.0))
    return ("projection", crs, transform, scale)


@algorithm("Image.clipToBoundsAndScale", DOCS + "ee-image-cliptoboundsandscale: clips to a "
           "geometry and sets the output size")
def _image_clip_scale(ev, input, geometry=None, width=None, height=None, maxDimension=None,
                      scale=None):
    out = derived(input, input.names, input.types, input.render)
    out.props = dict(input.props, _clip=(geometry, width, height))
    return out


# -- images as elements ----------------------------------------------------------------------------

@algorithm("Element.get", DOCS + "ee-element-get: a property's value (null when missing)")
def _element_get(ev, object, property):
    return object.props.get(property)


@algorithm("Image.geometry", DOCS + "ee-image-geometry: the image's footprint")
def _image_geometry(ev, feature, maxError=None, proj=None, geodesics=None):
    return Geom(feature.geometry, "EPSG:4326")


@algorithm("Image.date", DOCS + "ee-image-date: the image's system:time_start as a Date")
def _image_date(ev, image):
    return ("date", image.props["system:time_start"])


@algorithm("Date.format", DOCS + "ee-date-format: a Date as text (Joda pattern)")
def _date_format(ev, date, format=None, timeZone=None):
    fmt = (format or "yyyy-MM-dd'T'HH:mm:ss").replace("YYYY", "%Y").replace("yyyy", "%Y") \
        .replace("MM", "%m").replace("dd", "%d")
    return datetime.fromtimestamp(date[1] / 1000, timezone.utc).strftime(fmt)


@algorithm("DateRange", DOCS + "ee-daterange: [start, end) from ISO dates")
def _date_range(ev, start, end=None, timeZone=None):
    return ("range", _millis(start), _millis(end))


def _millis(d) -> int:
    if isinstance(d, (int, float)):
        return int(d)
    return int(datetime.fromisoformat(d).replace(tzinfo=timezone.utc).timestamp() * 1000)


@algorithm("Image.linkCollection", DOCS + "ee-image-linkcollection: adds bands of the image of "
           "the collection with the same matchPropertyName; fully masked bands without a match")
def _image_link(ev, input, imageCollection, linkedBands=None, linkedProperties=None,
                matchPropertyName="system:index"):
    key = input.props.get(matchPropertyName)
    match = next((e for e in imageCollection.elements
                  if e.props.get(matchPropertyName) == key), None)
    bands = linkedBands or []
    if match is None:
        linked = _image_constant(ev, [0] * len(bands))
        linked = derived(linked, bands, [FLOAT] * len(bands), lambda g: Raster(
            list(bands), np.zeros((len(bands), g.height, g.width)),
            np.zeros((len(bands), g.height, g.width), bool), [FLOAT] * len(bands)))
    else:
        linked = _image_select(ev, match, bands)
    out = _image_add_bands(ev, input, linked, overwrite=True)
    out.props, out.footprint, out.geometry = dict(input.props), input.footprint, input.geometry
    return out


# -- collections and filters -----------------------------------------------------------------------

@algorithm("ImageCollection.load", DOCS + "ee-imagecollection-load: a collection by id")
def _ic_load(ev, id, version=None):
    if id not in ev.catalogue.collections:
        raise ServiceRefusal(400, f"ImageCollection.load: ImageCollection asset '{id}' not found.")
    return Coll([file_image(bands, props) for bands, props in ev.catalogue.collections[id]])


@algorithm("Collection.loadTable", DOCS + "ee-featurecollection: a table by id")
def _load_table(ev, tableId, geometryColumn=None, version=None):
    if tableId not in ev.catalogue.tables:
        raise ServiceRefusal(400, f"Collection.loadTable: Table '{tableId}' not found.")
    return Coll(list(ev.catalogue.tables[tableId]))


@algorithm("Collection", DOCS + "ee-featurecollection: a collection of the given features")
def _collection(ev, features):
    return Coll(list(features))


@algorithm("Collection.filter", DOCS + "ee-collection-filter: the elements the filter passes")
def _collection_filter(ev, collection, filter):
    return Coll([e for e in collection.elements if filter(e)], collection.props)


@algorithm("Collection.map", DOCS + "ee-collection-map: the function applied to every element")
def _collection_map(ev, collection, baseAlgorithm, dropNulls=False):
    out = [ev.apply(baseAlgorithm, e) for e in collection.elements]
    return Coll([e for e in out if e is not None] if dropNulls else out)


@algorithm("Collection.size", DOCS + "ee-collection-size: the number of elements")
def _collection_size(ev, collection):
    return len(collection.elements)


@algorithm("Collection.toList", DOCS + "ee-collection-tolist: elements offset .. offset + count")
def _collection_to_list(ev, collection, count, offset=0):
    return list(collection.elements[int(offset):int(offset) + int(count)])


@algorithm("Feature", DOCS + "ee-feature: a geometry with properties")
def _feature(ev, geometry=None, metadata=None, geometryKey=None):
    g = geometry
    return Feat(g.shape if g is not None else None, g.crs if g is not None else "EPSG:4326",
                dict(metadata or {}))


@algorithm("Feature.select", DOCS + "ee-feature-select: only the selected properties")
def _feature_select(ev, input, propertySelectors, newProperties=None, retainGeometry=True):
    return Feat(input.geometry if retainGeometry else None, input.crs,
                {k: v for k, v in input.props.items() if k in propertySelectors})


def _field(e, name):
    if name == ".all":
        return e
    return e.props.get(name)


def _filter(test: Callable):
    def build(ev, leftField=None, rightValue=None, rightField=None, leftValue=None, **_):
        def run(e):
            left = leftValue if leftField is None else _field(e, leftField)
            right = rightValue if rightField is None else _field(e, rightField)
            return left is not None and right is not None and bool(test(left, right))
        return run
    return build


algorithm("Filter.equals", DOCS + "ee-filter-eq: left == right (false when missing)")(
    _filter(lambda a, b: a == b))
algorithm("Filter.lessThan", DOCS + "ee-filter-lt: left < right (false when missing)")(
    _filter(lambda a, b: a < b))
algorithm("Filter.listContains", DOCS + "ee-filter-listcontains: the left list contains the "
          "right value (also inList, with the list on the left)")(
    _filter(lambda a, b: b in a if isinstance(a, list) else a in b))
algorithm("Filter.dateRangeContains", DOCS + "ee-filter-daterange: start <= time < end")(
    _filter(lambda r, t: r[1] <= t < r[2]))


@algorithm("Filter.intersects", DOCS + "ee-filter-bounds: the element's footprint intersects "
           "the geometry")
def _filter_intersects(ev, leftField=None, rightValue=None, rightField=None, leftValue=None,
                       maxError=None):
    right = rightValue
    if isinstance(right, Feat):  # filterBounds sends the geometry as a feature
        right = Geom(right.geometry, right.crs)
    region = right.to("EPSG:4326")

    def run(e):
        geom = e.geometry if isinstance(e, Img) or getattr(e, "crs", None) == "EPSG:4326" \
            else Geom(e.geometry, e.crs).to("EPSG:4326")
        return geom is not None and geom.intersects(region)
    return run


# -- geometry and dictionaries ---------------------------------------------------------------

@algorithm("Projection", DOCS + "ee-projection: a CRS")
def _projection(ev, crs, transform=None, transformWkt=None):
    return crs


@algorithm("GeometryConstructors.Rectangle", DOCS + "ee-geometry-rectangle: [x0, y0, x1, y1]")
def _rectangle(ev, coordinates, crs=None, geodesic=None, evenOdd=None):
    from shapely.geometry import box

    c = np.asarray(coordinates, float).ravel()
    return Geom(box(*c), crs or "EPSG:4326")


def _geojson_geom(kind: str):
    def build(ev, coordinates, crs=None, geodesic=None, maxError=None, evenOdd=None):
        from shapely.geometry import shape

        return Geom(shape({"type": kind, "coordinates": coordinates}), crs or "EPSG:4326")
    return build


for _kind in ("Polygon", "MultiPolygon", "Point", "LineString"):
    algorithm(f"GeometryConstructors.{_kind}", DOCS + f"ee-geometry-{_kind.lower()}: from "
              "GeoJSON coordinates")(_geojson_geom(_kind))


@algorithm("Dictionary", DOCS + "ee-dictionary: a dictionary")
def _dictionary(ev, input=None):
    return dict(input or {})


@algorithm("Dictionary.get", DOCS + "ee-dictionary-get: the value of a key")
def _dictionary_get(ev, dictionary, key, defaultValue=None):
    if key not in dictionary and defaultValue is None:
        raise ServiceRefusal(400, f"Dictionary.get: Dictionary does not contain key: '{key}'.")
    return dictionary.get(key, defaultValue)


# -- reducers ------------------------------------------------------------------------------------

for _r in ("median", "min", "max", "sum", "mean"):
    algorithm(f"Reducer.{_r}", DOCS + f"ee-reducer-{_r}")(
        lambda ev, _r=_r, **kw: Reducer(_r, kw))


@algorithm("Reducer.percentile", DOCS + "ee-reducer-percentile: outputs p<N> per percentile")
def _reducer_percentile(ev, percentiles, outputNames=None, maxBuckets=None,
                        minBucketWidth=None, maxRaw=None):
    return Reducer("percentile", {"percentiles": percentiles, "names": outputNames})


@algorithm("Reducer.fixedHistogram", DOCS + "ee-reducer-fixedhistogram: counts in `steps` "
           "buckets of [min, max), as [[bucket start, count], ...]; others ignored")
def _reducer_histogram(ev, min, max, steps, cumulative=False):
    if cumulative:
        raise EvaluatorGap("cumulative histograms are not modelled")
    return Reducer("fixedHistogram", {"min": min, "max": max, "steps": int(steps)})


def _collection_reduce(kind: str):
    def run(ev, collection):
        imgs = collection.elements
        if not imgs:  # an empty collection reduces to an image without bands
            return Img([], [], {}, lambda g: Raster([], np.zeros((0, g.height, g.width)),
                                                     np.zeros((0, g.height, g.width), bool), []))
        names = imgs[0].names
        types = [t if t.precision != "int" or kind in ("min", "max") else DOUBLE
                 for t in imgs[0].types]

        def render(grid):
            stack = np.full((len(imgs), len(names), grid.height, grid.width), np.nan)
            for k, im in enumerate(imgs):
                r = im.render(grid)
                for i, n in enumerate(names):
                    j = r.names.index(n)  # bands are matched by name
                    stack[k, i] = np.where(r.mask[j], r.data[j], np.nan)
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = {"median": np.nanmedian, "min": np.nanmin, "max": np.nanmax,
                       "sum": np.nansum, "mean": np.nanmean}[kind](stack, axis=0)
            mask = np.isfinite(stack).any(axis=0)
            return Raster(list(names), np.nan_to_num(out), mask, types)

        return Img(list(names), types, {}, render)
    return run


for _r in ("median", "min", "max", "sum", "mean"):
    algorithm(f"reduce.{_r}", DOCS + f"ee-imagecollection-{_r}: per pixel and band, over the "
              "images' unmasked values (bands matched by name; a median of an even count "
              "averages the middle two)")(_collection_reduce(_r))


@algorithm("Image.reduceRegion", DOCS + "ee-image-reducerregion: the reducer over the pixels "
           "(of the crs/crsTransform lattice, or the scale) whose centres lie in the geometry; "
           "refused when they exceed maxPixels")
def _image_reduce_region(ev, image, reducer, geometry=None, scale=None, crs=None,
                         crsTransform=None, bestEffort=False, maxPixels=1e7, tileScale=1):
    from shapely.geometry import box

    grid, shape = _region_grid(geometry, scale, crs, crsTransform)
    found = grid.width * grid.height if shape.equals(box(*shape.bounds)) else None
    if found is None or found <= maxPixels:
        import shapely

        inside = shapely.contains_xy(shape, *grid.centres())
        found = int(inside.sum())
    if found > maxPixels:
        raise ServiceRefusal(400, f"Image.reduceRegion: Too many pixels in the region. Found "
                                  f"{found}, but maxPixels allows only {int(maxPixels)}.")
    r = image.render(grid)
    out = {}
    for i, name in enumerate(r.names):
        v = r.data[i][r.mask[i] & inside]
        out.update(_reduce_values(reducer, name, v))
    return out


def _region_grid(geometry: Geom, scale, crs, crsTransform):
    if crsTransform is not None:
        t = Affine(*crsTransform[:6])
    elif scale is not None:
        t = Affine(float(scale), 0, 0, 0, -float(scale), 0)
    else:
        raise EvaluatorGap("reduceRegion without scale or crsTransform uses the image's "
                           "default projection, which is not modelled")
    crs = crs or geometry.crs
    shape = geometry.to(crs)
    x0, y0, x1, y1 = shape.bounds
    c0, r1 = ~t * (x0, y0)
    c1, r0 = ~t * (x1, y1)
    # The lattice pixels whose centres can lie in the geometry.
    c0, c1 = int(np.floor(min(c0, c1) + 0.5)), int(np.ceil(max(c0, c1) - 0.5))
    r0, r1 = int(np.floor(min(r0, r1) + 0.5)), int(np.ceil(max(r0, r1) - 0.5))
    return Grid(crs, t * Affine.translation(c0, r0), max(0, c1 - c0), max(0, r1 - r0)), shape


def _reduce_values(reducer: Reducer, name: str, v: np.ndarray) -> dict:
    if reducer.kind == "fixedHistogram":
        p = reducer.params
        width = (p["max"] - p["min"]) / p["steps"]
        v = v[(v >= p["min"]) & (v < p["max"])]
        idx = np.minimum(((v - p["min"]) / width).astype(int), p["steps"] - 1)
        counts = np.bincount(idx, minlength=p["steps"])
        edges = p["min"] + width * np.arange(p["steps"])
        return {name: [[float(e), float(c)] for e, c in zip(edges, counts)] if len(v) else None}
    if reducer.kind == "percentile":
        ps = reducer.params["percentiles"]
        return {f"{name}_p{p:g}": (float(np.percentile(v, p)) if len(v) else None) for p in ps}
    if reducer.kind in ("median", "min", "max", "mean", "sum"):
        fn = {"median": np.median, "min": np.min, "max": np.max, "mean": np.mean,
              "sum": np.sum}[reducer.kind]
        return {name: float(fn(v)) if len(v) else None}
    raise EvaluatorGap(f"reduceRegion with {reducer.kind!r} is not modelled")


def request_size(expression) -> int:
    """The bytes of a request body as the client sends it: the serialized graph."""
    import ee

    return len(json.dumps(ee.serializer.encode(expression, for_cloud_api=True)))
