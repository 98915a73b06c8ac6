"""A double for the network calls of the Earth Engine export (EarthEngineClient) and a
reader for serialized graphs; everything else in those tests is production code."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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


def pixel_values(grid: dict, bands, nodata_x_below: float = -np.inf) -> np.ndarray:
    """What the double's 'Earth Engine' returns for a pixel grid: a smooth function of map
    coordinates per band, so any split of a cell reassembles to the same values. Normalized
    bands lie in [0, 1]; west of `nodata_x_below` is nodata (-9999); QA: 4 scenes seen, 1
    masked."""
    t, d = grid["affineTransform"], grid["dimensions"]
    cols = np.arange(d["width"]) + 0.5
    rows = np.arange(d["height"]) + 0.5
    x = t["translateX"] + t["scaleX"] * cols[None, :]
    y = t["translateY"] + t["scaleY"] * rows[:, None]
    out = np.zeros((d["height"], d["width"]), dtype=[(b, "<f4") for b in bands])
    for k, b in enumerate(bands):
        if b == "s2_observed":
            out[b] = 4.0
        elif b == "s2_masked":
            out[b] = 1.0
        else:
            v = 0.5 + 0.4 * np.sin(x / 700.0 + k) * np.cos(y / 900.0 - k)
            v = np.where(x < nodata_x_below, -9999.0, np.broadcast_to(v, out.shape))
            out[b] = v
    return out


@dataclass
class FakeEarthEngine:
    """Stands in for EarthEngineClient: records every request, answers from scripts."""
    values: list = field(default_factory=list)  # (predicate(tree), answer)
    pixel_errors: list = field(default_factory=list)  # (predicate(grid), exception, times)
    task_states: dict = field(default_factory=dict)
    blobs: dict = field(default_factory=dict)  # name -> callable(dest) writing the file
    project: str = "test-project"
    nodata_x_below: float = -np.inf
    value_calls: list = field(default_factory=list)
    pixel_calls: list = field(default_factory=list)
    tasks: list = field(default_factory=list)

    def compute_value(self, obj):
        tree = graph(obj)
        self.value_calls.append(tree)
        for pred, answer in self.values:
            if pred(tree):
                return answer
        raise AssertionError(f"unexpected computeValue {str(tree)[:300]}")

    def compute_pixels(self, params):
        self.pixel_calls.append(params)
        for rule in self.pixel_errors:
            pred, exc, left = rule
            if left and pred(params["grid"]):
                rule[2] -= 1
                raise exc
        return pixel_values(params["grid"], params["bandIds"], self.nodata_x_below)

    def start_task(self, task):
        self.tasks.append(task)
        tid = f"TASK{len(self.tasks):04d}"
        self.task_states[tid] = "READY"
        return tid

    def task_status(self, ids):
        return [{"id": i, "state": self.task_states.get(i, "UNKNOWN"),
                 **({"error_message": "Earth Engine memory limit"}
                    if self.task_states.get(i) == "FAILED" else {})} for i in ids]

    def download_blob(self, bucket, name, dest: Path) -> bool:
        if name not in self.blobs:
            return False
        self.blobs[name](Path(dest))
        return True


def write_batch_file(dest: Path, grid, cell, bands, transform=None) -> None:
    """A GeoTIFF like the one an Earth Engine batch task writes for a cell."""
    import rasterio

    from gee_export.earthengine.recipe import cell_grid

    arr = pixel_values(cell_grid(grid, cell), bands)
    data = np.stack([arr[b] for b in bands])
    with rasterio.open(dest, "w", driver="GTiff", width=cell.width, height=cell.height,
                       count=len(bands), dtype="float32", crs=grid.crs,
                       transform=transform or cell.transform(grid)) as f:
        f.write(data)
