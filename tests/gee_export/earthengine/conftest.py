"""Earth Engine offline: the library initialized from its shipped function catalogue."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ee_offline():
    """ee initialized without network or credentials (ee.apitestcase's recipe)."""
    import ee
    import ee.apitestcase

    ee.data._install_cloud_api_resource = lambda: None
    ee.data.getAlgorithms = ee.apitestcase.GetAlgorithms
    ee.Initialize(None, "", project="test-project")
    return ee


