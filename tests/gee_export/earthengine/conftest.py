"""Earth Engine offline: the library initialized from its shipped function catalogue, and the
demo sources as fixture collections for the double that executes graphs."""
from __future__ import annotations

from pathlib import Path

import pytest

DEMO_YEAR = 2018


@pytest.fixture(scope="session")
def ee_offline():
    """ee initialized without network or credentials (ee.apitestcase's recipe)."""
    import ee
    import ee.apitestcase

    ee.data._install_cloud_api_resource = lambda: None
    ee.data.getAlgorithms = ee.apitestcase.GetAlgorithms
    ee.Initialize(None, "", project="test-project")
    return ee


@pytest.fixture(scope="session")
def demo_sources(demo_export) -> Path:
    """The 512 px demo's sources for 2018 (Cloud Score+ included), made by the demo export."""
    ws, _ = demo_export
    return ws / "sources" / "demo512-2018"


@pytest.fixture(scope="session")
def catalogue(ee_offline, demo_sources, tmp_path_factory):
    """The demo sources as Earth Engine's collections (with decoys)."""
    from tests.gee_export.earthengine.ee_double import demo_catalogue

    return demo_catalogue(demo_sources, DEMO_YEAR, tmp_path_factory.mktemp("catalogue"))


@pytest.fixture
def double(catalogue):
    """A fresh Earth Engine double serving the demo sources."""
    from tests.gee_export.earthengine.ee_double import EarthEngineDouble

    return EarthEngineDouble(catalogue)
