"""Coordinate-pure noise for the demo scene: every value is a function of map coordinates and a
seed only, so any window of any grid is generated on its own and agrees with its neighbours."""
from __future__ import annotations

import numpy as np


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) value per integer lattice point; same point, same value, any window."""
    h = (ix.astype(np.uint64) * np.uint64(0x9E3779B1) + iy.astype(np.uint64) * np.uint64(0x85EBCA77)
         + np.uint64(seed * 0xC2B2AE3D % (1 << 32)))
    h ^= h >> np.uint64(15)
    h *= np.uint64(0x2C1B3C6D)
    h ^= h >> np.uint64(12)
    h *= np.uint64(0x297A2D39)
    h ^= h >> np.uint64(15)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [-1, 1] with features of about `scale` metres."""
    gx, gy = np.asarray(x, np.float64) / scale, np.asarray(y, np.float64) / scale
    ix, iy = np.floor(gx), np.floor(gy)
    fx, fy = (gx - ix).astype(np.float32), (gy - iy).astype(np.float32)
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    # Hash only the lattice points the window touches, then gather: the lattice is far
    # smaller than the pixel grid for every scale used here.
    x0, y0 = int(ix.min()), int(iy.min())
    lx, ly = np.arange(x0, int(ix.max()) + 2), np.arange(y0, int(iy.max()) + 2)
    table = _hash01(lx[None, :] + (1 << 20), ly[:, None] + (1 << 20), seed).astype(np.float32)
    ix, iy = ix - x0, iy - y0
    v00, v10 = table[iy, ix], table[iy, ix + 1]
    v01, v11 = table[iy + 1, ix], table[iy + 1, ix + 1]
    v = (v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy
    return 2 * v - 1


def fbm(x: np.ndarray, y: np.ndarray, scale: float, seed: int, octaves: int = 3) -> np.ndarray:
    out, amp, total = 0.0, 1.0, 0.0
    for o in range(octaves):
        out = out + amp * value_noise(x, y, scale / 2 ** o, seed + 101 * o)
        total += amp
        amp *= 0.5
    return out / total


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)
