"""A STAC asset as the local recipe reads a file: one band, named, in the recipe's units,
read window by window over HTTP (signed where the provider needs it), with no data as NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gee_export.remote.client import NetConfig, Signer, gdal_http_env, read_failure, with_retries
from gee_export.remote.providers import to_recipe_units

_SIGNERS: dict[NetConfig, Signer] = {}  # one per process: tokens shared by every asset


def signer(net: NetConfig) -> Signer:
    if net not in _SIGNERS:
        _SIGNERS[net] = Signer(net)
    return _SIGNERS[net]


@dataclass(frozen=True)
class RemoteAsset:
    """Bands of one item on one pixel grid (one asset each), and how their values become the
    recipe's: a scene's VV and VH together, so that the border-noise rule sees both."""
    hrefs: tuple[str, ...]  # as the item gives them (unsigned), one per band
    bands: tuple[str, ...]  # the recipe's band names (B2 ... SCL, VV, VH, value)
    kind: str  # the recipe's kind of source: s2, s1, dem (its no-data defaults)
    values: str  # providers.Sensor.values
    offset: float = 0.0  # DN offset removed (processing baseline 04.00+)
    sas: str | None = None  # the token endpoint when the URLs must be signed
    collection: str = ""
    net: NetConfig = NetConfig()

    def open_dataset(self) -> "AssetDataset":
        return AssetDataset(self)

    @property
    def name(self) -> str:  # what errors and records call it
        return self.hrefs[0]


class AssetDataset:
    """The parts of a rasterio dataset that local.read_source uses, over remote assets: band
    i is the i-th asset, described by the recipe's name, its values converted and its no data
    NaN (so nodata reads NaN). An expired signature is renewed and a failed read retried."""

    nodata = float("nan")

    def __init__(self, asset: RemoteAsset):
        self.asset = asset
        self._dss: list = []
        with_retries(lambda attempt: self._open(renew=attempt > 0),
                     f"open {asset.hrefs[0]}", asset.net)

    def _url(self, href: str, renew: bool) -> str:
        a = self.asset
        if a.sas is None:
            return href
        return signer(a.net).sign(href, a.sas, a.collection, renew=renew)

    def _open(self, renew: bool) -> None:
        import rasterio

        self.close()
        for href in self.asset.hrefs:
            try:
                with rasterio_env(self.asset.net):
                    self._dss.append(rasterio.open(self._url(href, renew)))
            except rasterio.errors.RasterioIOError as e:
                raise read_failure(e, href) from None

    @property
    def descriptions(self) -> tuple[str, ...]:
        return self.asset.bands

    @property
    def mask_flag_enums(self) -> tuple:
        return tuple(ds.mask_flag_enums[0] for ds in self._dss)

    def read(self, indexes, window=None, out_dtype=None, **kw) -> np.ndarray:
        def attempt(n: int) -> np.ndarray:
            if n > 0:  # a fresh signature and connection for every retry
                self._open(renew=True)
            return np.stack([self._band(i, window) for i in _listed(indexes)])
        out = with_retries(attempt, f"read {self.asset.hrefs[0]}", self.asset.net)
        return out if isinstance(indexes, (list, tuple)) else out[0]

    def _band(self, index: int, window) -> np.ndarray:
        from gee_export.local import _valid_mask

        ds, href = self._dss[index - 1], self.asset.hrefs[index - 1]
        try:
            with rasterio_env(self.asset.net):
                raw = ds.read([1], window=window, out_dtype="float32")
                valid = _valid_mask(ds, raw, [1], window, self.asset.kind)[0]
        except Exception as e:
            if not _is_io(e):
                raise
            raise read_failure(e, href) from None
        out = to_recipe_units(raw[0], self.asset.values, self.asset.offset)
        out[~valid] = np.nan
        return out

    def __getattr__(self, name: str):  # crs, transform, shape, window_transform, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._dss[0], name)

    def close(self) -> None:
        for ds in self._dss:
            ds.close()
        self._dss = []


def rasterio_env(net: NetConfig):
    import rasterio

    return rasterio.Env(**gdal_http_env(net))


def _listed(indexes) -> list[int]:
    return list(indexes) if isinstance(indexes, (list, tuple)) else [indexes]


def _is_io(e: Exception) -> bool:
    import rasterio

    return isinstance(e, (rasterio.errors.RasterioIOError, OSError))
