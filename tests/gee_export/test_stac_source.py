"""prep export --source stac against a STAC API double on 127.0.0.1: the same stack as
--source-dir on the same files for both providers' layouts, on a local pool or a Dask
cluster, and each fault a network brings handled (each test fails without its handling)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from gee_export.common.bands import BAND_NAMES
from tests.gee_export.stac_double import serve_demo
from tests.helpers import DEMO_TEST_SIZE, invoke

pytest.importorskip("pystac_client")
YEAR = 2022  # processing baseline 04.00: the DN offset of 1000 is in play
COMMON = ["--region", "demo", "--year", YEAR, "--demo-size", DEMO_TEST_SIZE, "--cell-size", 256,
          "--max-scene-cloud", 50, "--workers", 1, "--quiet"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    double, demo = serve_demo(tmp_path_factory.mktemp("stac"), YEAR, DEMO_TEST_SIZE,
                              ("pc", "es"))
    yield double, demo
    double.close()


@pytest.fixture(scope="module")
def from_files(served, tmp_path_factory):
    from gee_export.common.cli import prep

    _, demo = served
    ws = tmp_path_factory.mktemp("ws-local")
    invoke(prep, ["export", *COMMON, "--source-dir", demo, "--cloud-mask", "scl",
                  "--workspace", ws])
    return ws / "exports" / f"demo-{YEAR}"


def stac_args(double, demo, prefix: str, ws: Path, *more) -> list:
    provider = {"pc": "planetary-computer", "es": "earth-search"}[prefix]
    return ["export", *COMMON, "--source", "stac", "--stac-provider", provider, "--stac-api",
            double.api(prefix), "--hma-file", demo / "DEM_HMA.tif", "--outlines",
            demo / "outlines.gpkg", "--workspace", ws, *more]


def stacks(exp: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted((exp / "stack").glob("*.tif")):
        with rasterio.open(f) as src:
            out[f.name] = src.read()
    return out


def band_diffs(a: Path, b: Path) -> dict[str, float]:
    """Max |a - b| per band over every cell; NaN where exactly one of them is NaN."""
    sa, sb = stacks(a), stacks(b)
    assert sa.keys() == sb.keys() and sa
    worst = dict.fromkeys(BAND_NAMES, 0.0)
    for name in sa:
        for i, band in enumerate(BAND_NAMES):
            x, y = sa[name][i], sb[name][i]
            if not (np.isnan(x) == np.isnan(y)).all():
                worst[band] = float("nan")
                continue
            d = np.abs(x - y)[~np.isnan(x)]
            worst[band] = max(worst[band], float(d.max()) if d.size else 0.0)
    return worst


@pytest.mark.parametrize("prefix", ["pc", "es"])
def test_stac_export_equals_the_source_dir_export_of_the_same_files(served, from_files, prefix,
                                                                   tmp_path):
    from gee_export.common.cli import prep
    from gee_export.common.layout import read_manifest

    double, demo = served
    invoke(prep, stac_args(double, demo, prefix, tmp_path))
    exp = tmp_path / "exports" / f"demo-{YEAR}"
    diffs = band_diffs(exp, from_files)
    print(prefix, diffs)
    assert all(d <= 1e-6 for d in diffs.values()), diffs
    m = read_manifest(exp, "export")
    assert m["source"] == "stac" and m["cloud_mask"] == "scl"
    said = " ".join(m["stac"]["differences_from_earth_engine"])
    for words in ("gamma0", "sigma0", "SCL", "GLO-30", "EGM2008", "04.00", "1000"):
        assert words in said
    assert m["dem"]["offset_m"] == read_manifest(from_files, "export")["dem"]["offset_m"]


def test_dask_local_cluster_export_equals_the_pool_export(served, from_files, tmp_path):
    from distributed import LocalCluster

    from gee_export.common.cli import prep

    double, demo = served
    invoke(prep, stac_args(double, demo, "pc", tmp_path / "pool", "--workers", 2))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        invoke(prep, stac_args(double, demo, "pc", tmp_path / "dask", "--dask",
                               cluster.scheduler_address))
        invoke(prep, ["export", *COMMON, "--source-dir", demo, "--cloud-mask", "scl",
                      "--workspace", tmp_path / "dask-local", "--dask",
                      cluster.scheduler_address])
    a, b = (stacks(tmp_path / w / "exports" / f"demo-{YEAR}") for w in ("pool", "dask"))
    assert a.keys() == b.keys() and a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    local = stacks(tmp_path / "dask-local" / "exports" / f"demo-{YEAR}")
    for name, stack in stacks(from_files).items():  # --source-dir on the cluster too
        np.testing.assert_array_equal(stack, local[name])


def test_an_unreachable_dask_scheduler_is_one_line(served, tmp_path, monkeypatch):
    from gee_export.common import dask_pool
    from gee_export.common.cli import prep

    double, demo = served
    monkeypatch.setattr(dask_pool, "CONNECT_TIMEOUT_S", 1)
    res = invoke(prep, stac_args(double, demo, "pc", tmp_path, "--dask", "tcp://127.0.0.1:9"),
                 ok=False)
    line = res.output.strip().splitlines()[-1]
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert line.startswith("Error: --dask tcp://127.0.0.1:9: cannot reach the scheduler"), line


def test_dry_run_lists_each_cells_scenes_and_the_assets_it_would_read(served, tmp_path):
    from gee_export.common.cli import prep

    double, demo = served
    out = invoke(prep, stac_args(double, demo, "es", tmp_path, "--dry-run")).output
    lines = [ln for ln in out.splitlines() if ln.startswith("cell ")]
    assert lines and all("sentinel-2-l2a" in ln and "sentinel-1-rtc" in ln and
                         "cop-dem-glo-30" in ln for ln in lines)
    assert "blue/green/red/nir/swir16/scl" in lines[0] and "vv/vh" in lines[0]
    assert not (tmp_path / "exports").exists()


def test_search_follows_the_apis_next_links_page_by_page(served, monkeypatch):
    from gee_export.remote import client

    double, _ = served
    monkeypatch.setattr(client, "SEARCH_PAGE", 1)
    bbox = tuple(double.items["pc"][0]["bbox"])
    before = len(double.log)
    found = client.search_items(double.api("pc"), "sentinel-2-l2a", bbox,
                                (f"{YEAR}-07-01", f"{YEAR}-10-01"), None, client.NetConfig())
    assert [it["id"] for it in found] == [it["id"] for it in double.items["pc"]
                                          if it["collection"] == "sentinel-2-l2a"]
    assert sum(1 for _, p in double.log[before:] if p.endswith("/search")) == len(found) == 3
    # the date window's end is exclusive: a scene on its last day is out, as on Earth Engine
    late = client.search_items(double.api("pc"), "sentinel-2-l2a", bbox,
                               (f"{YEAR}-07-01", f"{YEAR}-09-20"), None, client.NetConfig())
    assert len(late) == 2


def test_dn_offset_and_units_follow_the_published_items():
    from gee_export.remote.providers import PROVIDERS, dn_offset, to_recipe_units
    from tests.gee_export.stac_double import template

    es = template("stactools-sentinel2-l2a-N0400.json")["properties"]
    pc = template("pc-sentinel-2-l2a.json")["properties"]
    assert es["s2:processing_baseline"] == pc["s2:processing_baseline"] == "04.00"
    assert dn_offset(es) == dn_offset(pc) == 1000.0
    assert dn_offset({**es, "earthsearch:boa_offset_applied": True}) == 0.0
    assert dn_offset({**es, "s2:processing_baseline": "03.01"}) == dn_offset({}) == 0.0
    dn = np.array([1000.0, 1500.0], np.float32)
    np.testing.assert_array_equal(to_recipe_units(dn, "dn", 1000.0), [0.0, 500.0])
    db = to_recipe_units(np.array([0.1, 1.0, 0.0, -32768.0], np.float32), "linear")
    np.testing.assert_allclose(db[:2], [-10.0, 0.0], atol=1e-6)
    assert np.isnan(db[2:]).all()
    assert PROVIDERS["planetary-computer"].s2.sas == \
        "https://planetarycomputer.microsoft.com/api/sas/v1/token"
    assert not PROVIDERS["earth-search"].s2.signed and PROVIDERS["earth-search"].s1.signed
