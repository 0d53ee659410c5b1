"""Pathfinder / Path-X: our own generator (Linsley et al. 2018 algorithm) and the reader of the lra_release layout.

Layout, for the official archive and for what :func:`write_dataset` writes (shared/specs/lra.md, sections 1.6, 3)::

    <root>/pathfinder{32,64,128}/<difficulty>/imgs/<batch_id>/sample_<k>.png     8-bit grayscale PNG (mode L)
    <root>/pathfinder{32,64,128}/<difficulty>/metadata/<batch_id>.npy            PLAIN TEXT despite the suffix

one metadata line per image, 11 space-separated fields: subpath (``imgs/<batch_id>``), file name, image index,
label (1 = the two markers sit on the same snake), continuity, contour_length, distractor_length, paddle_length,
paddle_thickness, paddle_margin, number of paddle contrasts; e.g. ``imgs/0 sample_0.png 0 0 1.0 6 2 2 0.5 1 1``.

Generator (``snakes2.from_wrapper`` of drewlinsley/pathfinder, re-implemented, not copied). Per image: a label,
exactly balanced within each batch; a paddle margin from ``paddle_margin_list``; two *target snakes* whose first
paddles start ``seed_distance`` px apart near the image centre, grown alternately paddle by paddle to
``contour_length`` paddles; ``num_distractor_snakes`` distractor snakes of ``distractor_length`` paddles; then two
circular markers: one at the first end of a random target snake, the other at the last end of the same snake
(label 1) or of the other target snake (label 0). A paddle is a segment of ``paddle_length`` px and width
``paddle_thickness``; successive pivots are ``paddle_length + 2*margin`` apart, so a snake is a dashed curve with
gaps of about ``2*margin`` px (as in the released images). The next paddle's direction is drawn among the
directions one pixel apart on a circle of radius ``paddle_length + margin`` with weight
``cos^2(min(continuity * dtheta, pi/2))``, among those whose paddle keeps clear of everything drawn so far.

Deliberate differences from the reference code (the parameters are on :class:`PathfinderConfig`):

- clearance: a paddle's centre line keeps ``2*margin + thickness`` px from every other paddle except its
  neighbours in its own snake (the reference tests overlap of margin-dilated, anti-aliased masks, which is a
  little looser), and the two *target* snakes keep a further ``target_separation`` px (default ``2*margin + 1``)
  from each other, so that the two marked snakes of a negative never touch (distractors may touch anything, as in
  the released data); the second target's first paddle is checked too (the reference does not check it);
- dead ends: the reference starts the pair of target snakes again from scratch; we first take back
  ``backtrack_paddles`` paddles of the stuck snake, up to ``max_backtracks`` times per pair. ``max_backtracks=0``
  is the reference's behaviour, and 30-1000x slower (at the LRA settings only ~1% of fresh pairs survive at 32px,
  ~0.3% at 128px and ~0.07% at 64px);
- positions are quantised to the anti-aliasing grid (``1/antialias_scale`` px; the reference rounds to whole px)
  and directions to the one-pixel-apart circle, so every paddle and marker is a pre-rendered patch;
- all candidate directions are tested at once instead of up to ``max_paddle_retrial`` random tries, and a
  distractor starts at the first free one of ``seed_trials`` random placements (the reference draws a random
  free pixel). Many images are grown in lockstep with numpy (see ``_extend``), which makes the generator fast:
  about 1,000 images/s per core at 32x32 before writing the PNG files.

Reproduced on purpose although it looks like an accident of the reference: its ``cv2.dilate`` border value
lets a snake start only in a 30-degree window of directions, so it places ~1/3 of the distractors it draws and
target snake 0 always starts up-left (``seed_angle_window``, in the 32 and 64 px presets). Without it our images held
~3x the released distractor ink, and no transformer left chance on them (issue 8, session 10).

Rendering follows the reference: each paddle and marker is drawn at ``antialias_scale`` x the size, reduced
with a Lanczos filter and rounded to 8 bits (``imresize`` returns uint8); target paddles have contrast
``snake_contrast * paddle_contrast``, distractor paddles ``snake_contrast`` (``snakes.make_many_snakes`` receives
``snake_contrast_list``), markers 1; layers combine by maximum and the image is stretched to 0..255 as
``scipy.misc.imsave`` did.

Determinism: batch ``b`` of seed ``s`` uses ``numpy.random.default_rng([s, b])``, so a batch is the same whatever
the number of workers, and an interrupted run can be resumed (a batch whose metadata file exists is skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import math
import multiprocessing as mp
import os
import random
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from lra import LRAError

log = logging.getLogger(__name__)

DIFFICULTIES = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}
ALIASES = {"easy": "curv_baseline", "intermediate": "curv_contour_length_9", "hard": "curv_contour_length_14"}
RESOLUTIONS = (32, 64, 128, 256)
_ALL_EIGHT = np.uint64(0x0101010101010101)  # eight True bytes viewed as one uint64
GENERATE_HINT = "python -m lra.data pathfinder --out DIR"
# Bumped whenever the same settings give other images, so that results on older data can be told apart (run rows
# record it as ``data_generator``): 2 = session 10, the reference's seed window and 8-bit patches.
GENERATOR_VERSION = 2
STAMP = "generator.json"  # beside imgs/ and metadata/: version and settings of the generator that wrote them

# Per-resolution LRA parameters (shared/specs/lra.md section 3: docstrings of lra_benchmarks/data/pathfinder.py,
# "defaults of drewlinsley/pathfinder except"). antialias_scale is listed twice there (4, then 2): the later wins.
# num_distractor_snakes is this numerator // distractor_length (Python 2 integer division in the wrapper).
_LRA = {
    32: dict(
        padding=1,
        antialias_scale=2,
        paddle_margin_list=(1,),
        seed_distance=7,
        marker_radius=1.5,
        paddle_length=2,
        paddle_thickness=0.5,
        continuity=1.0,
        snake_contrast_list=(2.0,),
        paddle_contrast_list=(0.75,),
        distractor_numerator=20,
        seed_angle_window=(-150, -121),  # the reference's border effect (PathfinderConfig docstring)
    ),
    64: dict(
        padding=1,
        antialias_scale=2,
        paddle_margin_list=(1,),
        seed_distance=12,
        marker_radius=2.5,
        paddle_length=5,
        paddle_thickness=1,
        continuity=1.8,
        snake_contrast_list=(0.8,),
        paddle_contrast_list=(1.0,),
        distractor_numerator=22,
        seed_angle_window=(-180, -85),  # the reference's border effect (PathfinderConfig docstring)
    ),
    128: dict(
        padding=1,
        antialias_scale=2,
        paddle_margin_list=(2, 3),
        seed_distance=20,
        marker_radius=3,
        paddle_length=5,
        paddle_thickness=1.5,
        continuity=1.8,
        snake_contrast_list=(0.9,),
        paddle_contrast_list=(1.0,),
        distractor_numerator=35,
    ),
    256: dict(
        padding=22,
        antialias_scale=2,
        paddle_margin_list=(3,),
        seed_distance=27,
        marker_radius=5,
        paddle_length=5,
        paddle_thickness=2,
        continuity=1.8,
        snake_contrast_list=(1.0,),
        paddle_contrast_list=(1.0,),
        distractor_numerator=30,
    ),
}


def canonical_difficulty(name: str) -> str:
    """``curv_contour_length_14`` for ``hard`` (the TFDS builder's names) and for itself."""
    name = ALIASES.get(name, name)
    if name not in DIFFICULTIES:
        choices = ", ".join([*DIFFICULTIES, *ALIASES])
        raise LRAError(f"unknown Pathfinder difficulty {name!r}; choose one of {choices}")
    return name


@dataclass(frozen=True)
class PathfinderConfig:
    """Every generator parameter; :meth:`lra` gives the LRA preset. Lengths are in pixels of the final image.

    The reference's names are kept. Ours (see the module docstring): ``target_separation`` (extra clearance
    between the two target snakes, default ``2*margin + 1``), ``seed_trials`` (random placements tried at once
    for a distractor's first paddle), ``max_backtracks`` and ``backtrack_paddles`` (0 = restart a stuck pair from
    scratch, as the reference does) and ``max_target_attempts`` (the reference retries forever; we stop with an
    error when that many pairs in a row fail).

    ``seed_angle_window`` (degrees, inclusive, ``atan2(row, col)`` of a first paddle's direction) reproduces a side
    effect of the reference that shapes the released images: its ``cv2.dilate`` fills the border with -DBL_MAX,
    and with the off-centre seed kernel ``seed_snake`` finds no free pixel at all unless the drawn direction
    (an integer degree, uniform) lies in this window; it then gives up at once. So target snake 0 always starts
    inside the window, and a distractor snake is placed on only ~1 in 12 tries (5 tries each): at 32 px the
    reference places ~3.2 of 10 easy and ~1.25 of 5 hard distractors (0 in 22% of hard images), where a uniform
    direction places nearly all. Measured on a line-by-line port of snakes.py/snakes2.py (session 10, issue 8;
    its dilation checked bit-for-bit against OpenCV): the window is a property of the seed kernel alone (a
    direction passes iff the kernel has a tap in each quadrant around its anchor), so per preset: 32 px
    (-150, -121); 64 px (-180, -85) (the reference also fails at -135); 128 px (Path-X) and 256 px ``None``:
    every direction passes at margin 3, and all but -59..-54 at margin 2. ``None`` = uniform directions.
    """

    resolution: int = 32
    difficulty: str = "curv_contour_length_14"  # the output sub-folder
    contour_length: int = 14
    distractor_length: int = 4
    num_distractor_snakes: int = 5
    paddle_length: int = 2
    paddle_thickness: float = 0.5
    paddle_margin_list: tuple[int, ...] = (1,)
    continuity: float = 1.0
    seed_distance: int = 7
    marker_radius: float = 1.5
    padding: int = 1
    antialias_scale: int = 2
    snake_contrast_list: tuple[float, ...] = (2.0,)
    paddle_contrast_list: tuple[float, ...] = (0.75,)
    max_distractor_contour_retrial: int = 4
    target_separation: float | None = None
    seed_trials: int = 32
    seed_angle_window: tuple[int, int] | None = None
    max_backtracks: int = 20
    backtrack_paddles: int = 2
    max_target_attempts: int = 200_000

    @classmethod
    def lra(cls, resolution: int = 32, difficulty: str = "curv_contour_length_14") -> PathfinderConfig:
        """The LRA parameters for ``pathfinder<resolution>/<difficulty>`` (32 = Pathfinder, 128 = Path-X)."""
        if resolution not in _LRA:
            raise LRAError(f"no LRA Pathfinder preset for resolution {resolution}; choose one of {RESOLUTIONS}")
        difficulty = canonical_difficulty(difficulty)
        params = dict(_LRA[resolution])
        numerator = params.pop("distractor_numerator")
        contour_length = DIFFICULTIES[difficulty]
        distractor_length = contour_length // 3
        return cls(
            resolution=resolution,
            difficulty=difficulty,
            contour_length=contour_length,
            distractor_length=distractor_length,
            num_distractor_snakes=numerator // distractor_length,
            **params,
        )

    def target_separation_extra(self, margin: int) -> float:
        """Extra clearance between the two target snakes: ``target_separation`` or, by default, 2*margin + 1 px."""
        return float(2 * margin + 1 if self.target_separation is None else self.target_separation)

    def validate(self) -> None:
        bad = []
        if self.resolution < 8:
            bad.append(f"resolution={self.resolution} (at least 8)")
        if self.contour_length < 1 or self.distractor_length < 1 or self.num_distractor_snakes < 0:
            bad.append("contour_length and distractor_length must be >= 1, num_distractor_snakes >= 0")
        if self.paddle_length < 1 or self.paddle_thickness <= 0 or self.antialias_scale < 1:
            bad.append("paddle_length, paddle_thickness and antialias_scale must be positive")
        if not self.paddle_margin_list or min(self.paddle_margin_list) < 0:
            bad.append(f"paddle_margin_list={self.paddle_margin_list} (non-empty, margins >= 0)")
        if not self.snake_contrast_list or not self.paddle_contrast_list:
            bad.append("snake_contrast_list and paddle_contrast_list must not be empty")
        if self.continuity <= 0:
            bad.append(f"continuity={self.continuity} (must be > 0)")
        if self.seed_trials < 1 or self.max_backtracks < 0 or self.backtrack_paddles < 1:
            bad.append("seed_trials and backtrack_paddles must be >= 1, max_backtracks >= 0")
        w = self.seed_angle_window
        if w is not None and (len(w) != 2 or not -180 <= w[0] <= w[1] < 180):
            bad.append(f"seed_angle_window={w} (two integer degrees lo <= hi in -180..179, or None)")
        if 2 * self.contour_length + self.num_distractor_snakes * self.distractor_length + 1 > 255:
            bad.append("more than 254 paddles per image (the occupancy counters are 8-bit)")
        if 2 * self.padding >= self.resolution:
            bad.append(f"padding={self.padding} leaves no room in a {self.resolution}px image")
        if bad:
            raise LRAError("bad Pathfinder parameters: " + "; ".join(bad))

    def metadata_fields(self, margin: int) -> str:
        """Fields 4..10 of a metadata line, written as the reference writes them (``1.0 14 4 2 0.5 1 1``)."""
        return (
            f"{self.continuity} {self.contour_length} {self.distractor_length} {self.paddle_length} "
            f"{self.paddle_thickness} {margin} {len(self.paddle_contrast_list)}"
        )

    def folder(self, out: Path) -> Path:
        return Path(out) / f"pathfinder{self.resolution}" / self.difficulty


# --- geometry tables -----------------------------------------------------------------------------------------


def _lanczos_down(hi: np.ndarray, size: int) -> np.ndarray:
    """Reduced with Lanczos, then rounded to 8 bits, as the reference's ``scipy.misc.imresize`` returns each
    paddle and marker patch as uint8: the faint ringing below 0.5/255 becomes background (0), which matters
    because pixel value 0 is the padding mask (~2x as many faint pixels per image without the rounding)."""
    small = Image.fromarray(hi.astype(np.float32), mode="F").resize((size, size), Image.Resampling.LANCZOS)
    return np.rint(np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0) * 255) / np.float32(255)


def _segment_distance(py: np.ndarray, px: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance from points (py, px) to the segment a-b (all in the same units)."""
    dy, dx = b[0] - a[0], b[1] - a[1]
    length2 = dy * dy + dx * dx
    t = np.clip(((py - a[0]) * dy + (px - a[1]) * dx) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    return np.hypot(py - (a[0] + t * dy), px - (a[1] + t * dx))


class _Tables:
    """Everything about one (config, margin) that does not depend on the image.

    A paddle is (pivot Q, direction j): Q = (Qy, Qx) on the anti-aliasing lattice (units 1/s px, s =
    antialias_scale), the paddle's centre line runs from ``Q/s + margin*u_j`` to ``Q/s + (length+margin)*u_j``
    with ``u_j`` one of K directions one pixel apart on the circle of radius length + margin. Occupancy is kept
    per image pixel, as the reference's masks are, in a padded int32 grid of three counters: byte 0 counts the
    clearance zones of all paddles and the image border, byte 1 the wider zones of target snake 0, byte 2 those
    of target snake 1. A pivot's grid cell is ``Q // s`` and its sub-pixel offset ``Q % s`` picks the table row.
    """

    def __init__(self, cfg: PathfinderConfig, margin: int) -> None:
        s, L, m, t = cfg.antialias_scale, cfg.paddle_length, margin, float(cfg.paddle_thickness)
        self.s, self.L, self.m = s, L, m
        self.K = K = max(8, int(math.ceil(2 * math.pi * (L + m))))
        theta = 2 * math.pi * np.arange(K) / K
        self.uy, self.ux = np.sin(theta), np.cos(theta)

        # continuity: weight of turning by d directions, d in (-K/2, K/2]; only d with weight > 0 are candidates
        offsets = np.arange(-((K - 1) // 2), K // 2 + 1)
        weights = np.cos(np.minimum(cfg.continuity * np.abs(offsets) * 2 * math.pi / K, math.pi / 2)) ** 2
        keep = weights > 1e-6
        self.wsup = weights[keep]
        self.S = S = int(keep.sum())
        self.jsup = (np.arange(K)[:, None] + offsets[keep][None, :]) % K  # (K, S) candidates after direction i

        self.clearance = R0 = 2 * m + t
        self.target_clearance = R1 = R0 + cfg.target_separation_extra(m)
        self.pad = pad = int(math.ceil(L + 3 * m + max(R0, R1))) + 3
        self.Wp = Wp = cfg.resolution + 2 * pad
        self.cells = Wp * Wp
        template = np.ones((Wp, Wp), dtype=np.int32)
        inner = slice(pad + cfg.padding, pad + cfg.resolution - cfg.padding)
        template[inner, inner] = 0
        self.template = template.reshape(-1)
        self.masks = (0xFF | 0xFF << 16, 0xFF | 0xFF << 8, 0xFF)  # counters each kind must find at zero

        fracs = [(ay / s, ax / s) for ay in range(s) for ax in range(s)]  # sub-pixel offset of a pivot, by sub
        # 8 points along a candidate's centre line (<= 0.5 px apart for short paddles, repeated up to 8 so that
        # one candidate's test is one uint64), as flat grid offsets from the pivot's cell
        r = np.linspace(m, L + m, min(8, 2 * L + 1))
        r = np.concatenate([r, np.repeat(r[-1], 8 - len(r))])
        self.off = np.empty((K, s * s, 8), dtype=np.int64)
        for sub, (fy, fx) in enumerate(fracs):
            oy = np.floor(fy + r[None, :] * self.uy[:, None]).astype(np.int64)
            ox = np.floor(fx + r[None, :] * self.ux[:, None]).astype(np.int64)
            self.off[:, sub] = oy * Wp + ox
        self.step_y = np.rint((L + 2 * m) * s * self.uy).astype(np.int64)
        self.step_x = np.rint((L + 2 * m) * s * self.ux).astype(np.int64)

        # clearance stamps: cells whose centre is within the clearance of the centre line, as flat offsets and
        # int32 increments, padded to one length per kind with other cells of the window (increment 0, so that
        # every index of a stamp is distinct and a fancy-indexed += is exact)
        c = int(math.ceil(L + m + max(R0, R1))) + 1
        gy, gx = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64) + 0.5
        window = (np.mgrid[-c : c + 1, -c : c + 1][0] * Wp + np.mgrid[-c : c + 1, -c : c + 1][1]).reshape(-1)
        near = np.zeros((K, s * s, gy.size), dtype=bool)
        wide = np.zeros_like(near)
        for j in range(K):
            for sub, (fy, fx) in enumerate(fracs):
                a = (fy + m * self.uy[j], fx + m * self.ux[j])
                b = (fy + (L + m) * self.uy[j], fx + (L + m) * self.ux[j])
                dist = _segment_distance(gy, gx, a, b).reshape(-1)
                near[j, sub], wide[j, sub] = dist <= R0, dist <= R1
        wide |= near
        self.stamp_off, self.stamp_val = [], []
        for kind in range(3):
            cover = near if kind == 2 else wide
            value = near.astype(np.int32) + (wide.astype(np.int32) << (8 * (kind + 1)) if kind < 2 else 0)
            nnz = int(cover.sum(axis=2).max())
            offs = np.empty((K, s * s, nnz), dtype=np.int64)
            vals = np.zeros((K, s * s, nnz), dtype=np.int32)
            for j in range(K):
                for sub in range(s * s):
                    order = np.argsort(~cover[j, sub], kind="stable")[:nnz]  # covered cells first
                    offs[j, sub] = window[order]
                    vals[j, sub] = np.where(cover[j, sub, order], value[j, sub, order], 0)
            self.stamp_off.append(offs)
            self.stamp_val.append(vals)

        # the predecessor's own byte-0 zone over each candidate's points (the predecessor does not count)
        self.prevcov = np.zeros((K, s * s, S, 8), dtype=np.int32)
        for i in range(K):
            for sub, (fy, fx) in enumerate(fracs):
                a = (fy + m * self.uy[i], fx + m * self.ux[i])
                b = (fy + (L + m) * self.uy[i], fx + (L + m) * self.ux[i])
                ny, nx = fy + self.step_y[i] / s, fx + self.step_x[i] / s  # the next pivot, same frame
                js = self.jsup[i]
                py = np.floor(ny + r[None, :] * self.uy[js][:, None]) + 0.5
                px = np.floor(nx + r[None, :] * self.ux[js][:, None]) + 0.5
                self.prevcov[i, sub] = _segment_distance(py, px, a, b) <= R0

        # paddle patches (unit contrast) per direction and sub-pixel offset, drawn at s x and Lanczos-reduced
        self.h = h = int(math.ceil(L + m + t)) + 4
        n = 2 * h + 1
        fy, fx = (np.mgrid[0 : n * s, 0 : n * s].astype(np.float64) + 0.5) / s
        self.patches = np.empty((K, s, s, n, n), dtype=np.float32)
        for j in range(K):
            for ay in range(s):
                for ax in range(s):
                    y0, x0 = h + ay / s, h + ax / s
                    a = (y0 + m * self.uy[j], x0 + m * self.ux[j])
                    b = (y0 + (L + m) * self.uy[j], x0 + (L + m) * self.ux[j])
                    cover = np.clip((t / 2 - _segment_distance(fy, fx, a, b)) * s + 0.5, 0.0, 1.0)
                    self.patches[j, ay, ax] = _lanczos_down(cover, n)
        self._scaled: dict[float, np.ndarray] = {}

        # marker patches: discs of marker_radius, contrast 1
        rad = float(cfg.marker_radius)
        self.hm = hm = int(math.ceil(rad)) + 4
        nm = 2 * hm + 1
        fy, fx = (np.mgrid[0 : nm * s, 0 : nm * s].astype(np.float64) + 0.5) / s
        self.markers = np.empty((s, s, nm, nm), dtype=np.float32)
        for ay in range(s):
            for ax in range(s):
                dist = np.hypot(fy - (hm + ay / s), fx - (hm + ax / s))
                self.markers[ay, ax] = _lanczos_down(np.clip((rad - dist) * s + 0.5, 0.0, 1.0), nm)

    def scaled(self, contrast: float) -> np.ndarray:
        if contrast not in self._scaled:
            self._scaled[contrast] = self.patches * np.float32(contrast)
        return self._scaled[contrast]

    def cell_sub(self, qy: np.ndarray, qx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat grid cell and sub-pixel index of pivots on the fine lattice."""
        s, pad = self.s, self.pad
        return (qy // s + pad) * self.Wp + qx // s + pad, (qy % s) * s + qx % s

    def lattice(self, y: np.ndarray, x: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pivot of a first paddle of direction j whose free end is at (y, x) px."""
        s, m = self.s, self.m
        return (np.rint((y - m * self.uy[j]) * s).astype(np.int64), np.rint((x - m * self.ux[j]) * s).astype(np.int64))


@lru_cache(maxsize=32)
def _tables(cfg: PathfinderConfig, margin: int) -> _Tables:
    return _Tables(cfg, margin)


# --- growing snakes, many images (or attempts) at once --------------------------------------------------------
#
# Lane n of a flat int32 array G is the occupancy grid of one image (or one attempt), at G[n*cells:(n+1)*cells];
# every step below works on all live lanes with a few numpy operations, which is what makes the generator fast.

_GRID_BYTES = 96 * 2**20  # the most memory the lanes of one round may take


def _stamp(
    tab: _Tables,
    G: np.ndarray,
    base: np.ndarray,
    qy: np.ndarray,
    qx: np.ndarray,
    j: np.ndarray,
    kind: int,
    sign: int = 1,
) -> None:
    if len(j) == 0:
        return
    cell, sub = tab.cell_sub(qy, qx)
    idx = (base + cell)[:, None] + tab.stamp_off[kind][j, sub]
    if sign > 0:
        G[idx] += tab.stamp_val[kind][j, sub]
    else:
        G[idx] -= tab.stamp_val[kind][j, sub]


def _free(
    tab: _Tables, G: np.ndarray, base: np.ndarray, qy: np.ndarray, qx: np.ndarray, j: np.ndarray, kind: int
) -> np.ndarray:
    cell, sub = tab.cell_sub(qy, qx)
    return ~(G[(base + cell)[..., None] + tab.off[j, sub]] & tab.masks[kind]).any(axis=-1)


def _extend(
    tab: _Tables,
    G: np.ndarray,
    base: np.ndarray,
    qy: np.ndarray,
    qx: np.ndarray,
    i: np.ndarray,
    kind: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One more paddle after (qy, qx, i) in every lane: (ok, pivot y, pivot x, direction); the ok ones stamped.

    The direction is drawn among the continuity candidates whose 8 centre-line points find every counter of
    ``kind``'s mask at zero (the predecessor's own zone excepted), with weight cos^2(min(continuity*dtheta, pi/2))."""
    n = len(i)
    _, sub_prev = tab.cell_sub(qy, qx)
    ny, nx = qy + tab.step_y[i], qx + tab.step_x[i]
    cell, sub = tab.cell_sub(ny, nx)
    js = tab.jsup[i]  # (n, S)
    points = (base + cell)[:, None, None] + tab.off[js, sub[:, None]]  # (n, S, 8)
    clear = (G[points] & tab.masks[kind]) <= tab.prevcov[i, sub_prev]
    free = clear.view(np.uint64)[..., 0] == _ALL_EIGHT  # all 8 points clear, one compare per candidate
    cum = np.cumsum(free * tab.wsup, axis=1)
    total = cum[:, -1]
    pick = np.minimum((cum <= (rng.random(n) * total)[:, None]).sum(axis=1), tab.S - 1)
    j = js[np.arange(n), pick]
    ok = total > 0
    _stamp(tab, G, base[ok], ny[ok], nx[ok], j[ok], kind)
    return ok, ny, nx, j


@dataclass
class _Targets:
    qy: np.ndarray  # (n, 2, contour_length) pivots, fine lattice
    qx: np.ndarray
    j: np.ndarray  # (n, 2, contour_length) directions
    grid: np.ndarray  # (n * cells,) occupancy after the two snakes


def _direction_of(tab: _Tables, degrees: np.ndarray) -> np.ndarray:
    """Index of the table direction nearest to each angle (degrees, ``atan2(row, col)``)."""
    return np.rint(np.mod(degrees, 360) * tab.K / 360).astype(np.int64) % tab.K


def _target_pairs(cfg: PathfinderConfig, tab: _Tables, rng: np.random.Generator, want: int) -> _Targets:
    """``want`` pairs of target snakes. As in the reference, the two snakes grow paddle by paddle, alternately
    (the shorter one next). On a dead end the reference starts the pair again from scratch; with
    ``max_backtracks`` > 0 we first take back ``backtrack_paddles`` paddles of the stuck snake and go on, up to
    ``max_backtracks`` times per pair (30-1000x fewer attempts; ``max_backtracks=0`` is the reference's way)."""
    CL, sd, res, K = cfg.contour_length, cfg.seed_distance, cfg.resolution, tab.K
    lo, hi = 2 * sd, res - 2 * sd
    if hi <= lo:  # small custom images: start anywhere away from the border
        lo, hi = cfg.padding, res - cfg.padding
    max_lanes = max(16, _GRID_BYTES // (4 * tab.cells))
    found_q: list[np.ndarray] = []
    found_g: list[np.ndarray] = []
    got, tried = 0, 0
    while got < want:
        rate = (got + 1) / (tried + 2)
        N = int(min(max_lanes, max(16, math.ceil(1.2 * (want - got) / rate))))
        G = np.tile(tab.template, N)
        base = np.arange(N, dtype=np.int64) * tab.cells
        hist = np.zeros((3, N, 2, CL), dtype=np.int64)  # pivot y, pivot x, direction of every paddle
        length = np.zeros((N, 2), dtype=np.int64)
        budget = np.full(N, cfg.max_backtracks)
        ty, tx = lo + rng.random(N) * (hi - lo), lo + rng.random(N) * (hi - lo)
        if cfg.seed_angle_window is None:
            j = (rng.random(N) * K).astype(np.int64)
        else:  # the reference retries the pair until snake 0's first direction falls in the window
            j = _direction_of(tab, rng.integers(cfg.seed_angle_window[0], cfg.seed_angle_window[1] + 1, N))
        qy, qx = tab.lattice(ty, tx, j)
        lanes = np.flatnonzero(_free(tab, G, base, qy, qx, j, 0))
        hist[:, lanes, 0, 0] = qy[lanes], qx[lanes], j[lanes]
        _stamp(tab, G, base[lanes], qy[lanes], qx[lanes], j[lanes], 0)
        phi = rng.integers(0, 360, N)[lanes] * (math.pi / 180)
        j = (rng.random(N) * K).astype(np.int64)[lanes]
        qy, qx = tab.lattice(ty[lanes] + sd * np.sin(phi), tx[lanes] + sd * np.cos(phi), j)
        ok = _free(tab, G, base[lanes], qy, qx, j, 1)
        lanes, qy, qx, j = lanes[ok], qy[ok], qx[ok], j[ok]
        hist[:, lanes, 1, 0] = qy, qx, j
        _stamp(tab, G, base[lanes], qy, qx, j, 1)
        length[lanes] = 1
        done: list[np.ndarray] = []
        while lanes.size:
            finished = (length[lanes] == CL).all(axis=1)
            done.append(lanes[finished])
            lanes = lanes[~finished]
            turn = (length[lanes, 1] < length[lanes, 0]).astype(np.int64)  # the shorter snake; snake 0 on ties
            dead: list[np.ndarray] = []
            for kind in (0, 1):
                sel = lanes[turn == kind]
                if sel.size == 0:
                    continue
                n = length[sel, kind]
                ok, qy, qx, j = _extend(tab, G, base[sel], *hist[:, sel, kind, n - 1], kind, rng)
                good = sel[ok]
                hist[:, good, kind, n[ok]] = qy[ok], qx[ok], j[ok]
                length[good, kind] += 1
                stuck = sel[~ok]
                budget[stuck] -= 1
                hopeless = (budget[stuck] < 0) | (length[stuck, kind] <= 1)
                dead.append(stuck[hopeless])
                back = stuck[~hopeless]
                for _ in range(cfg.backtrack_paddles):
                    back = back[length[back, kind] > 1]
                    last = length[back, kind] - 1
                    _stamp(tab, G, base[back], *hist[:, back, kind, last], kind, -1)
                    length[back, kind] = last
            if dead:
                lanes = lanes[~np.isin(lanes, np.concatenate(dead))]
        tried += N
        lanes = np.concatenate(done)[: want - got] if done else np.zeros(0, dtype=np.int64)
        got += len(lanes)
        if len(lanes):
            found_q.append(hist[:, lanes])
            found_g.append(G.reshape(N, tab.cells)[lanes].reshape(-1))
        if got == 0 and tried >= cfg.max_target_attempts:
            raise LRAError(
                f"Pathfinder generator found no room for two target snakes of {cfg.contour_length} paddles in "
                f"{tried} attempts ({res}px, margin {tab.m}): lower contour_length, paddle_length or the margins"
            )
    q = np.concatenate(found_q, axis=1)
    return _Targets(q[0], q[1], q[2], np.concatenate(found_g))


def _distractors(
    cfg: PathfinderConfig, tab: _Tables, rng: np.random.Generator, G: np.ndarray, n: int
) -> list[list[np.ndarray]]:
    """Up to ``num_distractor_snakes`` distractor snakes per image, each given ``max_distractor_contour_retrial``
    more tries and skipped if none succeeds (as the reference's ``make_many_snakes(allow_incomplete=True)``).
    Per image, a list of (3, distractor_length) arrays: pivot y, pivot x, direction."""
    DL, T, K = cfg.distractor_length, cfg.seed_trials, tab.K
    base_all = np.arange(n, dtype=np.int64) * tab.cells
    found: list[list[np.ndarray]] = [[] for _ in range(n)]
    lo, span = cfg.padding, cfg.resolution - 2 * cfg.padding
    for _ in range(cfg.num_distractor_snakes):
        pending = np.arange(n)
        for _ in range(cfg.max_distractor_contour_retrial + 1):
            if pending.size == 0:
                break
            P = pending.size
            if cfg.seed_angle_window is None:
                js = (rng.random((P, T)) * K).astype(np.int64)
                in_window = np.ones(P, dtype=bool)
            else:  # one direction per try, as the reference; outside the window the try fails
                deg = rng.integers(-180, 180, P)
                in_window = (deg >= cfg.seed_angle_window[0]) & (deg <= cfg.seed_angle_window[1])
                js = np.repeat(_direction_of(tab, deg)[:, None], T, axis=1)
            qy, qx = tab.lattice(lo + rng.random((P, T)) * span, lo + rng.random((P, T)) * span, js)
            ok = _free(tab, G, base_all[pending][:, None], qy, qx, js, 2)  # (P, T) random first paddles
            has = ok.any(axis=1) & in_window
            first = ok.argmax(axis=1)[has]
            live = pending[has]
            hist = [np.stack([qy[has, first], qx[has, first], js[has, first]])]
            _stamp(tab, G, base_all[live], *hist[0], 2)
            for _ in range(1, DL):
                if live.size == 0:
                    break
                ok, qy1, qx1, j1 = _extend(tab, G, base_all[live], *hist[-1], 2, rng)
                if not ok.all():
                    for h in hist:  # undo the paddles of the snakes that got stuck
                        _stamp(tab, G, base_all[live[~ok]], *h[:, ~ok], 2, -1)
                live = live[ok]
                hist = [h[:, ok] for h in hist] + [np.stack([qy1[ok], qx1[ok], j1[ok]])]
            if live.size:
                snakes = np.stack(hist, axis=2)  # (3, live, DL)
                for k, lane in enumerate(live.tolist()):
                    found[lane].append(snakes[:, k])
                pending = pending[~np.isin(pending, live)]
    return found


# --- rendering -----------------------------------------------------------------------------------------------


@dataclass
class PathfinderSample:
    """One generated image. With ``truth=True`` also the ground truth the tests use (never written to disk)."""

    image: np.ndarray  # (H, W) uint8
    label: int
    margin: int
    snakes: list[np.ndarray] | None = None  # per snake (0, 1 = targets, then distractors): (n, 2) row, col pixels
    markers: np.ndarray | None = None  # (2, 2) marker centres (row, col) in px; pixel (r, c) has its centre at (r, c)
    marker_snakes: tuple[int, int] | None = None  # the target snake each marker sits on
    targets_image: np.ndarray | None = None  # (H, W) uint8: target snakes and markers only, same scale as image
    segments: list[np.ndarray] | None = None  # per snake (n, 4): paddle centre lines y0, x0, y1, x1 in px, as markers


@dataclass
class _Layout:
    """What one image shows: snakes (0, 1 = targets) as (3, n) pivot y, pivot x, direction; paddle contrasts;
    marker centres (y, x) in px (pixel (r, c) spans [r, r+1) x [c, c+1)); the target snake of each marker."""

    snakes: list[np.ndarray]
    contrasts: list[list[float]]
    markers: tuple[tuple[float, float], tuple[float, float]]
    marker_snakes: tuple[int, int]
    label: int


def _layout(cfg: PathfinderConfig, tab: _Tables, rand: random.Random, snakes: list[np.ndarray], label: int) -> _Layout:
    """Contrasts and markers, as ``snakes2.two_snakes`` and ``from_wrapper`` draw them."""
    mus = list(cfg.snake_contrast_list) * 2
    rand.shuffle(mus)
    contrasts = [
        [_pick(rand, cfg.paddle_contrast_list) * float(mus[k]) for _ in range(snakes[k].shape[1])] for k in (0, 1)
    ]
    contrasts += [[_pick(rand, cfg.snake_contrast_list) for _ in range(sn.shape[1])] for sn in snakes[2:]]
    origin = int(rand.random() * 2)
    terminal = origin if label == 1 else 1 - origin
    s, m, L = tab.s, tab.m, tab.L
    qy, qx, j = snakes[origin][:, 0].tolist()
    marker_a = (qy / s + m * tab.uy[j], qx / s + m * tab.ux[j])
    qy, qx, j = snakes[terminal][:, -1].tolist()
    marker_b = (qy / s + (L + m) * tab.uy[j], qx / s + (L + m) * tab.ux[j])
    return _Layout(snakes, contrasts, (marker_a, marker_b), (origin, terminal), label)


def _pick(rand: random.Random, values: tuple) -> float:
    return float(values[int(rand.random() * len(values))] if len(values) > 1 else values[0])


def _border(tab: _Tables) -> int:
    return max(tab.h, tab.hm) + tab.L + 3 * tab.m + 2


def _render(cfg: PathfinderConfig, tab: _Tables, layouts: list[_Layout], targets_only: bool = False) -> np.ndarray:
    """(n, H, W) float32 images: every paddle patch times its contrast and the markers, combined by maximum.

    Vectorised over images: pass k paints the k-th paddle of every image at once (one image never gets two
    patches in one pass, so the fancy-indexed maximum is exact)."""
    res, s, K, hb = cfg.resolution, tab.s, tab.K, _border(tab)
    side = res + 2 * hb
    n = len(layouts)
    canvas = np.zeros(n * side * side, dtype=np.float32)
    values = sorted({c for lay in layouts for cs in lay.contrasts for c in cs})
    cid = {c: k for k, c in enumerate(values)}
    rows, ranks, pids = [], [], []
    for img, lay in enumerate(layouts):
        snakes = lay.snakes[:2] if targets_only else lay.snakes
        q = np.concatenate(snakes, axis=1)
        c = np.array([cid[v] for cs in lay.contrasts[: len(snakes)] for v in cs], dtype=np.int64)
        py, ay = np.divmod(q[0], s)
        px, ax = np.divmod(q[1], s)
        rows.append(img * side * side + (py + hb) * side + px + hb)
        pids.append(((c * K + q[2]) * s + ay) * s + ax)
        ranks.append(np.arange(q.shape[1]))
    origin, rank, pid = np.concatenate(rows), np.concatenate(ranks), np.concatenate(pids)
    table = np.concatenate([tab.scaled(v) for v in values]).reshape(len(values) * K * s * s, -1)
    h = tab.h
    dy, dx = np.mgrid[-h : h + 1, -h : h + 1]
    offsets = (dy * side + dx).reshape(-1)
    order = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[order], np.arange(rank.max() + 2))
    for k in range(rank.max() + 1):
        sel = order[bounds[k] : bounds[k + 1]]
        idx = origin[sel][:, None] + offsets
        canvas[idx] = np.maximum(canvas[idx], table[pid[sel]])
    hm = tab.hm
    dy, dx = np.mgrid[-hm : hm + 1, -hm : hm + 1]
    offsets = (dy * side + dx).reshape(-1)
    marks = tab.markers.reshape(s * s, -1)
    for which in (0, 1):
        centre = np.rint(np.array([lay.markers[which] for lay in layouts]) * s).astype(np.int64)
        py, ay = np.divmod(centre[:, 0], s)
        px, ax = np.divmod(centre[:, 1], s)
        idx = (np.arange(n) * side * side + (py + hb) * side + px + hb)[:, None] + offsets
        canvas[idx] = np.maximum(canvas[idx], marks[ay * s + ax])
    return canvas.reshape(n, side, side)[:, hb : hb + res, hb : hb + res]


def _to_uint8(img: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """Stretch to 0..255 as ``scipy.misc.imsave`` (bytescale) did: lo -> 0, hi -> 255."""
    scale = 255.0 / np.maximum(np.asarray(hi, dtype=np.float32) - lo, 1e-12)
    return np.clip((img - lo) * scale + 0.5, 0, 255).astype(np.uint8)


def _paint_snake(cfg: PathfinderConfig, tab: _Tables, snake: np.ndarray, contrasts: list[float]) -> np.ndarray:
    """One snake alone, (H, W) float32 (for the ground truth)."""
    res, s, hb, h = cfg.resolution, tab.s, _border(tab), tab.h
    canvas = np.zeros((res + 2 * hb, res + 2 * hb), dtype=np.float32)
    for (qy, qx, j), contrast in zip(snake.T.tolist(), contrasts, strict=True):
        py, ay = divmod(qy, s)
        px, ax = divmod(qx, s)
        view = canvas[py - h + hb : py + h + 1 + hb, px - h + hb : px + h + 1 + hb]
        np.maximum(view, tab.scaled(contrast)[j, ay, ax], out=view)
    return canvas[hb : hb + res, hb : hb + res]


def _truth(cfg: PathfinderConfig, tab: _Tables, lay: _Layout, lo: float, hi: float) -> dict:
    pixels = []
    for snake, cs in zip(lay.snakes, lay.contrasts, strict=True):
        layer = _paint_snake(cfg, tab, snake, cs)
        pixels.append(np.argwhere(layer >= 0.25 * layer.max()))
    targets = _render(cfg, tab, [lay], targets_only=True)[0]
    segments = []
    for qy, qx, j in lay.snakes:
        y, x, uy, ux = qy / tab.s - 0.5, qx / tab.s - 0.5, tab.uy[j], tab.ux[j]
        m, far = tab.m, tab.m + tab.L
        segments.append(np.stack([y + m * uy, x + m * ux, y + far * uy, x + far * ux], axis=1))
    return dict(
        snakes=pixels,
        markers=np.array(lay.markers, dtype=np.float64) - 0.5,
        marker_snakes=lay.marker_snakes,
        targets_image=_to_uint8(targets, lo, hi),
        segments=segments,
    )


def batch_rng(seed: int, batch_id: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(batch_id)])


def generate_batch(
    cfg: PathfinderConfig, n_images: int, seed: int = 0, batch_id: int = 0, truth: bool = False
) -> list[PathfinderSample]:
    """Batch ``batch_id`` of seed ``seed`` in memory: ``n_images`` images, labels exactly balanced (an odd count
    has one more positive) in random order. The same arguments always give the same images."""
    cfg.validate()
    rng = batch_rng(seed, batch_id)
    labels = np.array([0] * (n_images // 2) + [1] * (n_images - n_images // 2))
    rng.shuffle(labels)
    rand = random.Random(int(rng.integers(2**63)))
    margins = np.asarray(cfg.paddle_margin_list)[(rng.random(n_images) * len(cfg.paddle_margin_list)).astype(int)]
    out: list[PathfinderSample | None] = [None] * n_images
    for margin in sorted(set(margins.tolist())):
        tab = _tables(cfg, int(margin))
        todo = np.flatnonzero(margins == margin)
        chunk = max(1, _GRID_BYTES // (4 * tab.cells))
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            pairs = _target_pairs(cfg, tab, rng, len(idx))
            extra = _distractors(cfg, tab, rng, pairs.grid, len(idx))
            layouts = []
            for k, i in enumerate(idx.tolist()):
                snakes = [np.stack([pairs.qy[k, t], pairs.qx[k, t], pairs.j[k, t]]) for t in (0, 1)] + extra[k]
                layouts.append(_layout(cfg, tab, rand, snakes, int(labels[i])))
            images = _render(cfg, tab, layouts)
            lo, hi = images.min(axis=(1, 2)), images.max(axis=(1, 2))
            pixels = _to_uint8(images, lo[:, None, None], hi[:, None, None])
            for k, i in enumerate(idx.tolist()):
                out[i] = PathfinderSample(image=pixels[k], label=int(labels[i]), margin=int(margin))
                if truth:
                    for key, value in _truth(cfg, tab, layouts[k], float(lo[k]), float(hi[k])).items():
                        setattr(out[i], key, value)
    return out  # type: ignore[return-value]


# --- writing the lra_release layout --------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG (mode L), written directly: twice as fast as PIL's encoder for tiny images."""
    h, w = image.shape
    raw = np.zeros((h, w + 1), dtype=np.uint8)  # filter byte 0 (None) before every row
    raw[:, 1:] = image
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_batch(folder: Path, cfg: PathfinderConfig, batch_id: int, n_images: int, seed: int = 0) -> int:
    """Write ``imgs/<batch_id>/sample_<k>.png`` and then ``metadata/<batch_id>.npy`` under ``folder`` (the
    difficulty directory). Returns the number of images written; 0 if the metadata file already exists."""
    meta = folder / "metadata" / f"{batch_id}.npy"
    if meta.exists():
        return 0
    sub = f"imgs/{batch_id}"
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for stale in (folder / sub).glob(".*.tmp*"):  # left by an interrupted run
        stale.unlink(missing_ok=True)
    meta.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, sample in enumerate(generate_batch(cfg, n_images, seed, batch_id)):
        name = f"sample_{k}.png"
        _write_atomic(folder / sub / name, png_bytes(sample.image))
        lines.append(f"{sub} {name} {k} {sample.label} {cfg.metadata_fields(sample.margin)}\n")
    _write_atomic(meta, "".join(lines).encode())
    return n_images


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes, started fresh ("spawn": safe after torch has started threads); None for one worker.
    A worker that cannot start (e.g. the main script came from stdin) raises BrokenProcessPool, never hangs."""
    if workers <= 1:
        yield None
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _as_completed(pool: ProcessPoolExecutor, fn: Callable, jobs: list) -> Iterator:
    futures = [pool.submit(fn, job) for job in jobs]
    for future in as_completed(futures):
        yield future.result()


def _batch_job(job: tuple[str, PathfinderConfig, int, int, int]) -> tuple[int, int, float]:
    folder, cfg, batch_id, n, seed = job
    start = time.perf_counter()
    written = write_batch(Path(folder), cfg, batch_id, n, seed)
    return batch_id, written, time.perf_counter() - start


@dataclass
class WriteSummary:
    folder: Path
    images: int  # written now
    skipped_batches: int  # already complete (metadata present)
    seconds: float
    worker_seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def images_per_second_per_core(self) -> float:
        return self.images / self.worker_seconds if self.worker_seconds > 0 else 0.0


def write_dataset(
    out: Path,
    cfg: PathfinderConfig,
    num_images: int = 200_000,
    batch_size: int = 1_000,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
) -> WriteSummary:
    """Generate ``num_images`` images into ``out/pathfinder<res>/<difficulty>/`` in batches of ``batch_size``,
    over ``workers`` processes (default: all cores). Complete batches from an earlier run are kept."""
    cfg.validate()
    if num_images < 1 or batch_size < 1:
        raise LRAError(f"num_images={num_images} and batch_size={batch_size} must be positive")
    folder = cfg.folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = json.dumps({"version": GENERATOR_VERSION, "config": dataclasses.asdict(cfg)}, sort_keys=True)
    stamp_file = folder / STAMP
    if stamp_file.exists():
        if stamp_file.read_text() != stamp:
            raise LRAError(f"{stamp_file}: written by another generator version or settings; delete {folder} first")
    elif any((folder / "metadata").glob("*.npy")):
        raise LRAError(f"{folder}: holds images without {STAMP} (an older generator); delete it first")
    else:  # first, so that a resumed run finds it; never rewritten: a new mtime would change the data's fingerprint
        # and make every run decode all the PNGs again (lra/data/cache.py; ~30 s per call on the H200, session 15)
        _write_atomic(stamp_file, stamp.encode())
    jobs = []
    for b, start in enumerate(range(0, num_images, batch_size)):
        jobs.append((str(folder), cfg, b, min(batch_size, num_images - start), seed))
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    start = time.perf_counter()
    done, skipped, busy = 0, 0, 0.0
    with _pool(workers) as pool:
        results = map(_batch_job, jobs) if pool is None else _as_completed(pool, _batch_job, jobs)
        for i, (_, written, took) in enumerate(results, start=1):
            done += written
            skipped += written == 0
            busy += took if written else 0.0
            if progress and (i == len(jobs) or i % max(1, len(jobs) // 20) == 0):
                rate = done / busy if busy else 0.0
                print(f"  {folder}: batch {i}/{len(jobs)}, {done} images, {rate:.0f} images/s per core", flush=True)
    return WriteSummary(folder, done, skipped, time.perf_counter() - start, busy)


def measure_images_per_second(
    resolution: int = 32,
    difficulty: str = "curv_contour_length_14",
    n_images: int = 500,
    seed: int = 0,
    write: bool = True,
) -> float:
    """Images/s of one process for the LRA preset, including PNG encoding and (``write``) writing the files."""
    cfg = PathfinderConfig.lra(resolution, difficulty)
    for margin in cfg.paddle_margin_list:
        _tables(cfg, margin)  # the one-off table build is not part of the rate
    start = time.perf_counter()
    if write:
        with tempfile.TemporaryDirectory() as tmp:
            write_batch(Path(tmp), cfg, 0, n_images, seed)
            took = time.perf_counter() - start
    else:
        for sample in generate_batch(cfg, n_images, seed):
            png_bytes(sample.image)
        took = time.perf_counter() - start
    return n_images / took


# --- reader --------------------------------------------------------------------------------------------------


@dataclass
class PathfinderImages:
    pixels: np.ndarray  # (n, H*W) uint8, row-major
    labels: np.ndarray  # (n,) int64
    paths: list[str]  # image files, in metadata order (empty PNGs left out)
    skipped: list[str]  # empty (0-byte) PNGs, left out
    shape: tuple[int, int]  # (H, W)


def _batch_key(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def _metadata_lines(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    if raw.startswith(b"\x93NUMPY"):  # a real .npy, as drewlinsley/pathfinder's np.save writes
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as err:
            raise LRAError(f"{path}: unreadable .npy metadata ({err})") from None
        return [[str(v) for v in np.atleast_1d(row)] for row in np.atleast_2d(arr)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LRAError(f"{path}: metadata is neither text nor a .npy array") from None
    return [line.split() for line in text.splitlines()]


def generator_version(root: Path) -> int | None:
    """The ``GENERATOR_VERSION`` that wrote ``root`` (a difficulty folder), None for data without a stamp (the
    released archive, or ours before version 2)."""
    try:
        return int(json.loads((Path(root) / STAMP).read_text())["version"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise LRAError(f"{Path(root) / STAMP}: unreadable; delete it and regenerate the folder") from None


def read_metadata(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths, labels and 'file:line' references from every ``root/metadata/*.npy`` (batches in numeric order)."""
    root = Path(root)
    meta_dir = root / "metadata"
    if not meta_dir.is_dir():
        what = "directory" if root.is_dir() else "data"
        raise LRAError(
            f"Pathfinder {what} not found: {meta_dir} does not exist. Generate it with `{GENERATE_HINT}` "
            "(then pass data_dir=DIR) or point data_dir at your lra_release/lra_release folder; see README"
        )
    files = sorted(meta_dir.glob("*.npy"), key=_batch_key)
    if not files:
        raise LRAError(f"{meta_dir}: no metadata/*.npy files; generate the data with `{GENERATE_HINT}`")
    paths, labels, refs = [], [], []
    for f in files:
        for line_no, fields in enumerate(_metadata_lines(f), start=1):
            if not fields:
                continue
            ref = f"{f}:{line_no}"
            if len(fields) < 4:
                raise LRAError(
                    f"{ref}: malformed metadata line, expected 11 space-separated fields (subpath, filename, index, "
                    f"label, ...), found {len(fields)}: {' '.join(fields)!r}"
                )
            try:
                label = int(float(fields[3]))
                if float(fields[3]) != label:
                    raise ValueError
            except ValueError:
                raise LRAError(f"{ref}: label (field 4) {fields[3]!r} is not an integer") from None
            if label not in (0, 1):
                raise LRAError(f"{ref}: label {label} is not 0 or 1")
            paths.append(root / fields[0] / fields[1])
            labels.append(label)
            refs.append(ref)
    if not paths:
        raise LRAError(f"{meta_dir}: the metadata files list no images")
    return paths, np.asarray(labels, dtype=np.int64), refs


def _probe_shape(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            mode, shape = im.mode, (im.height, im.width)
    except FileNotFoundError:
        raise LRAError(f"{path}: image listed in the metadata does not exist") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise LRAError(f"{path}: not a readable PNG ({err})") from None
    if mode != "L":
        raise LRAError(f"{path}: expected an 8-bit grayscale PNG (mode L), found mode {mode}")
    return shape


def _decode(paths: list[str], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Decode PNGs into rows of uint8; returns (pixels, empty mask, first error or None)."""
    empty = np.zeros(len(paths), dtype=bool)
    pixels = np.zeros((len(paths), shape[0] * shape[1]), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with open(p, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return pixels, empty, f"{p}: image listed in the metadata does not exist"
        except OSError as err:
            return pixels, empty, f"{p}: cannot read ({err.strerror})"
        if not data:
            empty[i] = True
            continue
        try:
            with Image.open(io.BytesIO(data)) as im:
                mode, size = im.mode, (im.height, im.width)
                if mode != "L":
                    return pixels, empty, f"{p}: expected an 8-bit grayscale PNG (mode L), found mode {mode}"
                if size != shape:
                    return pixels, empty, (f"{p}: expected a {shape[0]}x{shape[1]} image, found {size[0]}x{size[1]}")
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as err:
            return pixels, empty, f"{p}: not a readable PNG ({err})"
        pixels[i] = arr.reshape(-1)
    return pixels, empty, None


def _decode_job(job: tuple[list[str], tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, str | None]:
    return _decode(*job)


def read_images(
    root: Path, max_len: int | None = None, workers: int | None = None, chunk_size: int = 2_000
) -> PathfinderImages:
    """Every image listed in ``root/metadata/*.npy`` (``root`` = a difficulty directory such as
    ``pathfinder32/curv_contour_length_14``), decoded in parallel; empty (0-byte) PNGs are skipped and listed."""
    paths, labels, _ = read_metadata(Path(root))
    names = [str(p) for p in paths]
    shape: tuple[int, int] | None = None
    if max_len is not None:
        side = math.isqrt(int(max_len))
        shape = (side, side) if side * side == max_len else None
    if shape is None:  # take it from the first non-empty image
        first = next((name for name in names if not os.path.exists(name) or os.path.getsize(name) > 0), None)
        if first is None:
            raise LRAError(f"{root}: every listed PNG is empty")
        shape = _probe_shape(first)
        if max_len is not None:
            raise LRAError(
                f"{first}: expected {max_len} pixels (max_len), found a {shape[0]}x{shape[1]} image "
                f"({shape[0] * shape[1]} pixels)"
            )
    assert shape is not None
    n = len(names)
    pixels = np.zeros((n, shape[0] * shape[1]), dtype=np.uint8)
    empty = np.zeros(n, dtype=bool)
    chunks = [(names[i : i + chunk_size], shape) for i in range(0, n, chunk_size)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks)))
    with _pool(workers) as pool:
        results = map(_decode_job, chunks) if pool is None else pool.map(_decode_job, chunks)
        for c, (part, part_empty, err) in enumerate(results):
            if err:
                raise LRAError(err)
            pixels[c * chunk_size : c * chunk_size + len(part)] = part
            empty[c * chunk_size : c * chunk_size + len(part)] = part_empty
    skipped = [name for name, e in zip(names, empty, strict=True) if e]
    if skipped:
        log.warning("Pathfinder: skipped %d empty (0-byte) PNG(s) under %s, e.g. %s", len(skipped), root, skipped[0])
    keep = ~empty
    if not keep.any():
        raise LRAError(f"{root}: every listed PNG is empty")
    return PathfinderImages(
        pixels[keep], labels[keep], [n_ for n_, k in zip(names, keep, strict=True) if k], skipped, shape
    )


def split_indices(
    n: int, split_seed: int | None = 42, splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, np.ndarray]:
    """A random 80/10/10 partition of ``range(n)``: train = first floor(0.8 n) of a permutation, val the next
    floor(0.1 n), test the rest. ``split_seed=None`` draws a fresh split each time, as Nystromformer/Skyformer do
    (``random.shuffle``, unseeded); S4 uses a seeded 80/10/10 split with seed 42 (torch ``random_split``, so its
    exact membership differs from ours). LRA's TFDS builder takes the metadata order [:80%] [80%:90%] [90%:]."""
    if len(splits) != 3 or min(splits) < 0 or abs(sum(splits) - 1.0) > 1e-6:
        raise LRAError(f"splits={tuple(splits)} must be three non-negative fractions summing to 1")
    order = np.random.default_rng(split_seed).permutation(n)
    a = int(math.floor(splits[0] * n + 1e-9))
    b = a + int(math.floor(splits[1] * n + 1e-9))
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def read_pathfinder(
    root: Path,
    max_len: int | None = None,
    split_seed: int | None = 42,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    workers: int | None = None,
    dtype: type = np.int64,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train"|"val"|"test": (ids (n, H*W) pixel values 0..255 in ``dtype``, labels (n,) int64)}``.

    ``root`` is a difficulty directory (``<data_dir>/pathfinder32/curv_contour_length_14``); ``max_len`` checks
    the image size (1024 = 32x32, 16384 = 128x128). Pass ``dtype=np.uint8`` for Path-X: int64 ids of 200K
    128x128 images take 26 GB."""
    images = read_images(Path(root), max_len, workers)
    parts = split_indices(len(images.labels), split_seed, splits)
    return {name: (images.pixels[idx].astype(dtype), images.labels[idx]) for name, idx in parts.items()}


# --- command line (wired into ``python -m lra.data pathfinder`` by lra/data/__main__.py) ------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="data root (pass it to run.py as data_dir=)")
    parser.add_argument(
        "--resolution",
        type=int,
        nargs="+",
        default=[32],
        choices=RESOLUTIONS,
        help="32 = Pathfinder, 128 = Path-X (default: 32)",
    )
    parser.add_argument(
        "--difficulty",
        nargs="+",
        default=["curv_contour_length_14"],
        help="curv_baseline|easy, curv_contour_length_9|intermediate, curv_contour_length_14|hard, "
        "or all (default: curv_contour_length_14, the one LRA uses)",
    )
    parser.add_argument("--num-images", type=int, default=200_000, help="per resolution and difficulty")
    parser.add_argument("--batch-size", type=int, default=1_000, help="images per imgs/<batch_id>/ folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one generator parameter (a PathfinderConfig field; lists comma-separated), e.g. "
        "num_distractor_snakes=0; repeatable; needs --name",
    )
    parser.add_argument("--name", help="folder of a --set variant under pathfinder<res>/ (run.py: task.path=...)")


def replace_settings(cfg: PathfinderConfig, settings: dict, folder: str | None = None) -> PathfinderConfig:
    """``cfg`` with some fields changed (and, with ``folder``, written to ``pathfinder<res>/<folder>``)."""
    changed = dataclasses.replace(cfg, **settings, difficulty=folder or cfg.difficulty)
    changed.validate()
    return changed


def parse_settings(items: list[str]) -> dict[str, object]:
    """``["num_distractor_snakes=0", "paddle_margin_list=1,2"]`` -> :class:`PathfinderConfig` fields, each typed
    after the field's default, so a diagnostic variant is one command line away."""
    fields = {f.name: f for f in dataclasses.fields(PathfinderConfig)}
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields or key in ("resolution", "difficulty"):
            known = ", ".join(k for k in fields if k not in ("resolution", "difficulty"))
            raise LRAError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {known}")
        default = getattr(PathfinderConfig(), key)
        try:
            if key == "seed_angle_window":  # two degrees, or none for uniform directions
                out[key] = None if raw.lower() in ("none", "null") else tuple(int(v) for v in raw.split(","))
            elif isinstance(default, tuple):
                kind = type(default[0])
                out[key] = tuple(kind(v) for v in raw.split(","))
            elif default is None:  # target_separation: a number of pixels, or none for the default
                out[key] = None if raw.lower() in ("none", "null") else float(raw)
            else:
                out[key] = type(default)(raw)
        except ValueError:
            raise LRAError(f"--set {item!r}: {raw!r} is not a {type(default).__name__}") from None
    return out


def run_from_args(args: argparse.Namespace) -> list[WriteSummary]:
    names = list(DIFFICULTIES) if "all" in args.difficulty else [canonical_difficulty(d) for d in args.difficulty]
    settings = parse_settings(getattr(args, "set", []) or [])
    variant = getattr(args, "name", None)
    if settings and not variant:
        raise LRAError("--set makes a variant of the LRA data: name its folder with --name (e.g. --name easy-clear)")
    if variant and len(names) * len(args.resolution) > 1:
        raise LRAError("--name names one folder: give one --resolution and one --difficulty with it")
    summaries = []
    for res in args.resolution:
        for name in names:
            cfg = PathfinderConfig.lra(res, name)
            if variant:
                cfg = replace_settings(cfg, settings, folder=variant)
            summary = write_dataset(
                args.out, cfg, args.num_images, args.batch_size, args.seed, args.workers, progress=True
            )
            note = f" ({summary.skipped_batches} complete batches kept)" if summary.skipped_batches else ""
            print(
                f"wrote {summary.images} images to {summary.folder} in {summary.seconds:.1f}s: "
                f"{summary.images_per_second:.0f} images/s, {summary.images_per_second_per_core:.0f} per core"
                f"{note}"
            )
            summaries.append(summary)
    return summaries
