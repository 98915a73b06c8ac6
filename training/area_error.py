"""How far a model's glacier areas are off: an error model learned on ground it never trained
on, against reference outlines of the same year.

A mapped glacier's area error is its edges' displacement summed along its outline. Along the
reference outlines that lie on validation ground (train evaluate), the scene is cut into
pieces (a glacier's outline within one PIECE_PX cell); each piece gives its outline length P
(ice divides left out: no image shows them, so no edge there is mapped) and its area error E
(predicted ice of the glacier's zone less its reference ice, on that ground). The model is

    E = mu P + e,   Var(e) = a P + b P^2

mu, the mean outward displacement of the edges, is the bias per unit outline; a P is edge noise
that averages out along an outline (independent stretches), b P^2 a displacement that a whole
piece shares. All three are fitted by maximum likelihood. A glacier of outline L (its divides
left out) then has level error sd sqrt(a L + b L^2), and the bias's own uncertainty (se of mu)
times L, shared by every glacier. The level error is the same each year (the same model,
threshold and sensors map the same kind of edge alike): it is an uncertainty of an area, and
cancels in a rate.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

PIECE_PX = 128  # the cell that cuts validation-ground outlines into pieces (half the demo's tile)
MIN_PIECE_KM = 0.2  # shorter pieces are mostly pixel noise at their cell's edge
MIN_PIECES = 6  # fewer cannot estimate three parameters with any spread to spare
SAMPLE_M = 5.0  # spacing of the points that measure outline length on each kind of ground


@dataclass(frozen=True)
class AreaErrorModel:
    """The fitted edge-error model (km and km^2): see the module's docstring."""
    offset_km: float  # mu: mean outward edge displacement (bias per km of outline), km
    offset_se_km: float  # its standard error
    var_per_km: float  # a: km^4 per km of outline
    var_per_km2: float  # b: km^4 per km^2 of outline
    pieces: int
    length_km: float  # outline on validation ground the fit used
    threshold: float  # the prediction's ice threshold: the model holds for it only

    def bias_km2(self, length_km: np.ndarray) -> np.ndarray:
        return self.offset_km * np.asarray(length_km, float)

    def level_sigma_km2(self, length_km: np.ndarray) -> np.ndarray:
        """Each glacier's own level error (1 sigma), independent between glaciers."""
        length = np.asarray(length_km, float)
        return np.sqrt(self.var_per_km * length + self.var_per_km2 * length ** 2)

    def to_dict(self) -> dict:
        return {**asdict(self), "offset_m": 1e3 * self.offset_km,
                "offset_se_m": 1e3 * self.offset_se_km}

    @classmethod
    def from_dict(cls, d: dict) -> "AreaErrorModel":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def fit_error_model(errors_km2: np.ndarray, lengths_km: np.ndarray, threshold: float,
                    glaciers: np.ndarray | None = None) -> AreaErrorModel | None:
    """Maximum likelihood of E ~ N(mu P, a P + b P^2) over the pieces (None with fewer than
    MIN_PIECES); the standard error of mu from the fit's weights or, where larger, robust to
    the pieces of one glacier sharing an error (clustered by `glaciers`)."""
    from scipy.optimize import minimize

    e, p = np.asarray(errors_km2, float), np.asarray(lengths_km, float)
    keep = p >= MIN_PIECE_KM
    e, p = e[keep], p[keep]
    groups = None if glaciers is None else np.asarray(glaciers)[keep]
    if len(p) < MIN_PIECES:
        return None

    def variance(log_ab: np.ndarray) -> np.ndarray:
        a, b = np.exp(log_ab)
        return a * p + b * p ** 2

    def mu_of(v: np.ndarray) -> float:  # the weighted estimate of mu given the variances
        return float((p * e / v).sum() / (p * p / v).sum())

    def nll(log_ab: np.ndarray) -> float:
        v = variance(log_ab)
        return float(0.5 * (np.log(v) + (e - mu_of(v) * p) ** 2 / v).sum())

    scale = float(np.var(e / p)) + 1e-12  # a start: the pieces' offsets' spread as b
    best = min((minimize(nll, np.log([scale * s, scale]), method="Nelder-Mead",
                         options={"xatol": 1e-4, "fatol": 1e-9, "maxiter": 4000})
                for s in (1e-3, 1e-1, 10.0)), key=lambda r: r.fun)
    v = variance(best.x)
    a, b = np.exp(best.x)
    mu = mu_of(v)
    return AreaErrorModel(mu, _offset_se(e, p, v, mu, groups), float(a), float(b),
                          int(len(p)), float(p.sum()), float(threshold))


def _offset_se(e: np.ndarray, p: np.ndarray, v: np.ndarray, mu: float,
               groups: np.ndarray | None) -> float:
    """The standard error of mu: from the weights, or the cluster-robust (sandwich) one over
    the glaciers where it is larger (with G/(G - 1) for few clusters)."""
    info = float((p * p / v).sum())
    model = math.sqrt(1 / info)
    if groups is None or len(set(groups.tolist())) < 2:
        return model
    score = p * (e - mu * p) / v
    per = np.array([score[groups == g].sum() for g in np.unique(groups)])
    robust = math.sqrt((per ** 2).sum() * len(per) / (len(per) - 1)) / info
    return max(model, robust)


def divide_free_boundaries(geometries: Sequence) -> list:
    """Each reference glacier's outline less its ice divides (where it touches another)."""
    import shapely

    geoms = list(geometries)
    tree = shapely.STRtree(geoms)
    out = []
    for i, g in enumerate(geoms):
        line = g.boundary
        near = [geoms[j] for j in tree.query(g.buffer(1.0)) if j != i]
        if near:
            line = line.difference(shapely.union_all(near).buffer(1.0))
        out.append(line)
    return out


def shared_divides(geometries: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(n, n) the ice divide (km) each pair of glaciers shares, and (n,) each outline (km)."""
    import shapely

    geoms = list(geometries)
    tree = shapely.STRtree(geoms)
    shared = np.zeros((len(geoms), len(geoms)))
    for i, g in enumerate(geoms):
        for j in tree.query(g.buffer(1.0)):
            if j != i:
                shared[i, j] = shapely.length(g.boundary.intersection(geoms[j].buffer(1.0))) / 1e3
    return shared, np.array([shapely.length(g.boundary) / 1e3 for g in geoms])


def outline_samples(lines: Sequence, spacing_m: float = SAMPLE_M
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Points every spacing_m along each line (x, y) and the 1-based glacier each belongs
    to: a point stands for spacing_m of outline."""
    import shapely

    xs, owners = [], []
    for k, line in enumerate(lines, start=1):
        length = shapely.length(line)
        if length <= 0:
            continue
        d = np.arange(spacing_m / 2, length, spacing_m)
        pts = shapely.get_coordinates(shapely.line_interpolate_point(line, d))
        xs.append(pts)
        owners.append(np.full(len(pts), k, np.int32))
    if not xs:
        return np.zeros((0, 2)), np.zeros(0, np.int32)
    return np.concatenate(xs), np.concatenate(owners)


class EdgePieces:
    """Validation-ground pieces of a scene, accumulated block by block: per (glacier, cell),
    predicted ice of its zone less its reference ice (pixels), and outline length (m)."""

    def __init__(self, n: int, transform, lines: Sequence):
        from rasterio.transform import rowcol

        self.n, self.cells = n, {}
        xy, self.owner = outline_samples(lines)
        rows, cols = rowcol(transform, xy[:, 0], xy[:, 1]) if len(xy) else ([], [])
        self.row, self.col = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        self.pixels = np.zeros(0)

    def add(self, row: int, col: int, ground_validation: np.ndarray, valid: np.ndarray,
            ice: np.ndarray, ref: np.ndarray, zone: np.ndarray) -> None:
        h, w = valid.shape
        on = ground_validation & valid
        rr, cc = np.nonzero(on)
        cell = ((rr + row) // PIECE_PX) * (1 << 20) + (cc + col) // PIECE_PX
        for label, sign, where in ((zone, 1, ice[rr, cc]), (ref, -1, None)):
            lab = label[rr, cc]
            sel = lab > 0 if where is None else (lab > 0) & where
            keys, counts = np.unique(lab[sel].astype(np.int64) * (1 << 40) + cell[sel],
                                     return_counts=True)
            for k, c in zip(keys.tolist(), counts.tolist()):
                self._cell(k)[0] += sign * c
        inside = (self.row >= row) & (self.row < row + h) & (self.col >= col) & \
            (self.col < col + w)
        r, c = self.row[inside] - row, self.col[inside] - col
        hit = on[r, c]
        cell = ((r[hit] + row) // PIECE_PX) * (1 << 20) + (c[hit] + col) // PIECE_PX
        keys, counts = np.unique(self.owner[inside][hit].astype(np.int64) * (1 << 40) + cell,
                                 return_counts=True)
        for k, c in zip(keys.tolist(), counts.tolist()):
            self._cell(k)[1] += c * SAMPLE_M

    def usable(self) -> int:
        """How many pieces are long enough to fit on."""
        return sum(length / 1e3 >= MIN_PIECE_KM for _, length in self.cells.values())

    def _cell(self, key: int) -> list:
        return self.cells.setdefault(key, [0, 0.0])

    def fit(self, pixel_km2: float, ratios: np.ndarray, threshold: float
            ) -> AreaErrorModel | None:
        """The error model of these pieces (areas ellipsoidal by each glacier's ratio)."""
        keys = np.array(list(self.cells), np.int64)
        if not len(keys):
            return None
        vals = np.array(list(self.cells.values()), float)
        glacier = keys >> 40
        errors = vals[:, 0] * pixel_km2 * ratios[glacier]
        return fit_error_model(errors, vals[:, 1] / 1e3, threshold, glacier)
