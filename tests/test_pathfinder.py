"""Pathfinder generator -> lra_release layout -> reader, with the labels re-checked from the ground truth and in
the rendered pixels (connected components written here: scipy is not a dependency)."""

from __future__ import annotations

import io
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lra import LRAError
from lra.data import pathfinder as pf

N32, BATCH32 = 240, 100  # three batches: 100, 100, 40
SMALL = {64: 10, 128: 8}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lra_release")
    pf.write_dataset(root, pf.PathfinderConfig.lra(32), N32, BATCH32, seed=5, workers=1)
    for res, n in SMALL.items():
        pf.write_dataset(root, pf.PathfinderConfig.lra(res), n, n, seed=5, workers=1)
    return root


@pytest.fixture(scope="module")
def truth() -> dict[int, list[pf.PathfinderSample]]:
    out = {32: pf.generate_batch(pf.PathfinderConfig.lra(32), 200, seed=11, truth=True)}
    for res in (64, 128):
        out[res] = pf.generate_batch(pf.PathfinderConfig.lra(res), 12, seed=11, truth=True)
    return out


def folder(root: Path, res: int) -> Path:
    return root / f"pathfinder{res}" / "curv_contour_length_14"


# --- presets -------------------------------------------------------------------------------------------------


def test_lra_presets_follow_the_spec_table():
    hard32 = pf.PathfinderConfig.lra(32, "hard")
    assert hard32 == pf.PathfinderConfig.lra(32, "curv_contour_length_14")
    assert (hard32.contour_length, hard32.distractor_length, hard32.num_distractor_snakes) == (14, 4, 5)
    assert (hard32.paddle_length, hard32.paddle_thickness, hard32.paddle_margin_list) == (2, 0.5, (1,))
    assert (hard32.seed_distance, hard32.marker_radius, hard32.continuity, hard32.antialias_scale) == (7, 1.5, 1.0, 2)
    assert (hard32.snake_contrast_list, hard32.paddle_contrast_list, hard32.padding) == ((2.0,), (0.75,), 1)
    base32 = pf.PathfinderConfig.lra(32, "easy")
    assert (base32.difficulty, base32.contour_length, base32.distractor_length, base32.num_distractor_snakes) == (
        "curv_baseline",
        6,
        2,
        10,
    )
    mid64 = pf.PathfinderConfig.lra(64, "intermediate")
    assert (mid64.contour_length, mid64.distractor_length, mid64.num_distractor_snakes, mid64.seed_distance) == (
        9,
        3,
        7,
        12,
    )
    x = pf.PathfinderConfig.lra(128)
    assert (x.paddle_margin_list, x.seed_distance, x.marker_radius, x.paddle_thickness, x.continuity) == (
        (2, 3),
        20,
        3,
        1.5,
        1.8,
    )
    assert (x.num_distractor_snakes, x.snake_contrast_list, x.paddle_length) == (35 // 4, (0.9,), 5)
    assert base32.metadata_fields(1) == "1.0 6 2 2 0.5 1 1"  # the released pathfinder32 example line
    with pytest.raises(LRAError, match="difficulty"):
        pf.PathfinderConfig.lra(32, "curv_contour_length_20")
    with pytest.raises(LRAError, match="resolution"):
        pf.PathfinderConfig.lra(48)


# --- layout, metadata, PNGs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("res", [32, 64, 128])
def test_layout_metadata_and_pngs(data_root, res):
    cfg = pf.PathfinderConfig.lra(res)
    root = folder(data_root, res)
    n = N32 if res == 32 else SMALL[res]
    metas = sorted((root / "metadata").iterdir(), key=lambda p: int(p.stem))
    batches = [BATCH32, BATCH32, N32 - 2 * BATCH32] if res == 32 else [n]
    assert [p.name for p in metas] == [f"{b}.npy" for b in range(len(batches))]
    labels = []
    for b, (meta, size) in enumerate(zip(metas, batches, strict=True)):
        text = meta.read_text()
        assert text.endswith("\n")
        lines = text.splitlines()
        assert len(lines) == size
        batch_labels = []
        for k, line in enumerate(lines):
            fields = line.split(" ")
            assert len(fields) == 11, line
            assert fields[:3] == [f"imgs/{b}", f"sample_{k}.png", str(k)]
            assert fields[3] in ("0", "1")
            margin = int(fields[9])
            assert margin in cfg.paddle_margin_list
            assert " ".join(fields[4:]) == cfg.metadata_fields(margin)
            batch_labels.append(int(fields[3]))
            with Image.open(root / fields[0] / fields[1]) as im:
                assert (im.mode, im.size) == ("L", (res, res))
                pixels = np.asarray(im)
            assert pixels.max() == 255 and pixels.min() == 0
        assert sum(batch_labels) == size - size // 2  # exactly balanced within a batch
        labels += batch_labels
        assert sorted(p.name for p in (root / f"imgs/{b}").iterdir()) == sorted(f"sample_{k}.png" for k in range(size))
    assert abs(np.mean(labels) - 0.5) <= 0.01
    assert not list(root.rglob(".*tmp*"))  # atomic writes leave no temporaries


def test_png_encoder_round_trips_through_pil():
    img = np.random.default_rng(0).integers(0, 256, size=(17, 23), dtype=np.uint8)
    with Image.open(io.BytesIO(pf.png_bytes(img))) as im:
        assert (im.mode, im.size) == ("L", (23, 17))
        np.testing.assert_array_equal(np.asarray(im), img)


def test_existing_batches_are_kept_and_tmp_leftovers_removed(tmp_path):
    cfg = pf.PathfinderConfig.lra(32)
    first = pf.write_dataset(tmp_path, cfg, 30, 10, seed=1, workers=1)
    assert (first.images, first.skipped_batches) == (30, 0)
    meta = cfg.folder(tmp_path) / "metadata" / "1.npy"
    meta.unlink()  # as if the run had stopped while writing batch 1
    (cfg.folder(tmp_path) / "imgs" / "1" / ".sample_3.png.tmp123").write_bytes(b"half")
    before = (cfg.folder(tmp_path) / "imgs" / "0" / "sample_0.png").read_bytes()
    again = pf.write_dataset(tmp_path, cfg, 30, 10, seed=1, workers=1)
    assert (again.images, again.skipped_batches) == (10, 2)
    assert meta.exists() and not list(cfg.folder(tmp_path).rglob(".*tmp*"))
    assert (cfg.folder(tmp_path) / "imgs" / "0" / "sample_0.png").read_bytes() == before
    assert pf.generator_version(cfg.folder(tmp_path)) == pf.GENERATOR_VERSION


def test_generating_a_complete_folder_again_leaves_its_fingerprint_alone(tmp_path):
    """Each device call runs the generator; on a machine that already holds the images it must change nothing,
    or the data cache (keyed by the files' sizes and mtimes) is rebuilt: 200K PNGs decoded again per run."""
    from lra.data.cache import fingerprint

    cfg = pf.PathfinderConfig.lra(32)
    pf.write_dataset(tmp_path, cfg, 20, 10, seed=1, workers=1)
    before = fingerprint(cfg.folder(tmp_path))
    time.sleep(0.01)  # a rewrite would get another mtime
    again = pf.write_dataset(tmp_path, cfg, 20, 10, seed=1, workers=1)
    assert (again.images, again.skipped_batches) == (0, 2) and fingerprint(cfg.folder(tmp_path)) == before


def test_a_folder_of_other_generator_settings_or_version_is_not_completed(tmp_path):
    """Resuming into a folder that another generator version (or other settings) wrote would mix two image
    distributions under one name: refused, with the folder to delete."""
    cfg = pf.PathfinderConfig.lra(32)
    pf.write_dataset(tmp_path, cfg, 4, 4, seed=1, workers=1)
    with pytest.raises(LRAError, match="another generator version or settings"):
        pf.write_dataset(tmp_path, pf.replace_settings(cfg, {"seed_angle_window": None}), 8, 4, seed=1, workers=1)
    (cfg.folder(tmp_path) / pf.STAMP).unlink()  # as data of the generator before version 2
    assert pf.generator_version(cfg.folder(tmp_path)) is None
    with pytest.raises(LRAError, match="older generator"):
        pf.write_dataset(tmp_path, cfg, 8, 4, seed=1, workers=1)


# --- ground truth and connectivity ---------------------------------------------------------------------------


def point_segment(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Distance from points p (..., 2) to segments s (..., 4) = y0 x0 y1 x1, broadcast."""
    a, d = s[..., :2], s[..., 2:] - s[..., :2]
    t = np.clip(((p - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * d), axis=-1)


def segment_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact distance between every segment of a (n, 4) and of b (m, 4): (n, m)."""
    A, B = a[:, None, :], b[None, :, :]
    d = np.minimum.reduce(
        [
            point_segment(A[..., :2], B),
            point_segment(A[..., 2:], B),
            point_segment(B[..., :2], A),
            point_segment(B[..., 2:], A),
        ]
    )

    def side(p, q, r):  # orientation of r relative to p->q
        u, v = q - p, r - p
        return np.sign(u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0])

    a0, a1, b0, b1 = A[..., :2], A[..., 2:], B[..., :2], B[..., 2:]
    crossing = (side(a0, a1, b0) * side(a0, a1, b1) < 0) & (side(b0, b1, a0) * side(b0, b1, a1) < 0)
    return np.where(crossing, 0.0, d)


@pytest.mark.parametrize("res", [32, 64, 128])
def test_ground_truth_markers_sit_on_the_right_snakes_and_snakes_keep_clear(truth, res):
    cfg = pf.PathfinderConfig.lra(res)
    for sample in truth[res]:
        segs = sample.segments
        assert len(segs[0]) == len(segs[1]) == cfg.contour_length
        assert all(len(s) == cfg.distractor_length for s in segs[2:])
        assert len(segs) - 2 <= cfg.num_distractor_snakes
        # each marker is an end of a target snake: nearest target by centre-line distance
        ends = []
        for marker in sample.markers:
            dist = [np.min(segment_distance(np.array([[*marker, *marker]]), segs[k])) for k in (0, 1)]
            assert min(dist) < 0.05, (marker, dist)
            ends.append(int(np.argmin(dist)))
        assert tuple(ends) == sample.marker_snakes
        assert (ends[0] == ends[1]) == (sample.label == 1)
        first, last = segs[ends[0]][0, :2], segs[ends[1]][-1, 2:]
        np.testing.assert_allclose(sample.markers, [first, last], atol=1e-9)
        # the drawn pixels of each marker's snake reach the marker
        for marker, k in zip(sample.markers, ends, strict=True):
            assert np.min(np.linalg.norm(sample.snakes[k] - marker, axis=1)) <= 1.5
        # clearance: centre lines 2*margin + thickness apart (target to target: + 2*margin + 1), less the
        # one-pixel occupancy grid's quantisation; neighbours inside a snake are exempt
        near = 2 * sample.margin + cfg.paddle_thickness - 0.8
        wide = near + 2 * sample.margin + 1
        assert segment_distance(segs[0], segs[1]).min() >= wide
        for a in range(len(segs)):
            for b in range(a, len(segs)):
                d = segment_distance(segs[a], segs[b])
                if a == b:
                    d = d[np.abs(np.subtract.outer(np.arange(len(d)), np.arange(len(d)))) >= 2]
                assert d.size == 0 or d.min() >= near, (a, b, d.min())


def connected(img: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: int, radius: float) -> bool:
    """Whether pixel round(a) reaches round(b) through pixels >= threshold, stepping up to `radius` px (bridging
    the dashes' gaps): a flood fill with numpy shifts."""
    bright = img >= threshold
    h, w = img.shape
    (ay, ax), (by, bx) = (np.clip(np.rint(p).astype(int), 0, [h - 1, w - 1]) for p in (a, b))
    k = int(radius)
    steps = [(dy, dx) for dy in range(-k, k + 1) for dx in range(-k, k + 1) if 0 < dy * dy + dx * dx <= radius**2]
    reach = np.zeros_like(bright)
    reach[ay, ax] = True
    while True:
        padded = np.pad(reach, k)
        grown = reach.copy()
        for dy, dx in steps:
            grown |= padded[k + dy : k + dy + h, k + dx : k + dx + w]
        grown &= bright
        grown[ay, ax] = True
        if grown[by, bx]:
            return True
        if (grown == reach).all():
            return False
        reach = grown


@pytest.mark.parametrize("res", [32, 64, 128])
def test_markers_connected_in_the_image_iff_positive(truth, res, capsys):
    """Snakes are dashed (gaps of about 2*margin px), so 'connected' bridges gaps up to 2*margin + 0.5 px through
    pixels >= 32. Positives: the markers connect in the image. Negatives: they do not in the image of the two
    target snakes alone; in the full image distractors may link them (as in the released data), reported only."""
    pos = [connected(s.image, *s.markers, 32, 2 * s.margin + 0.5) for s in truth[res] if s.label == 1]
    neg_targets = [connected(s.targets_image, *s.markers, 32, 2 * s.margin + 0.5) for s in truth[res] if s.label == 0]
    neg_full = [connected(s.image, *s.markers, 32, 2 * s.margin + 0.5) for s in truth[res] if s.label == 0]
    with capsys.disabled():
        print(
            f"\npathfinder{res}: markers connected in the image: positives {np.mean(pos):.3f} (n={len(pos)}), "
            f"negatives {np.mean(neg_full):.3f} (targets only: {np.mean(neg_targets):.3f}, n={len(neg_targets)})"
        )
    assert pos and neg_targets
    assert np.mean(pos) >= 0.97
    assert np.mean(neg_targets) <= 0.03


# --- determinism ---------------------------------------------------------------------------------------------


def test_same_seed_same_images_whatever_the_workers(data_root, tmp_path):
    cfg = pf.PathfinderConfig.lra(32)
    a = pf.generate_batch(cfg, 20, seed=3, batch_id=1)
    b = pf.generate_batch(cfg, 20, seed=3, batch_id=1)
    c = pf.generate_batch(cfg, 20, seed=4, batch_id=1)
    assert all(np.array_equal(x.image, y.image) and x.label == y.label for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))
    pf.write_dataset(tmp_path, cfg, N32, BATCH32, seed=5, workers=2)  # spawn pool, batches out of order
    ours, theirs = folder(tmp_path, 32), folder(data_root, 32)
    files = sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
    assert all((ours / f).read_bytes() == (theirs / f).read_bytes() for f in files)


# --- reader --------------------------------------------------------------------------------------------------


def test_reader_round_trip_and_splits(data_root):
    root = folder(data_root, 32)
    images = pf.read_images(root, max_len=1024, workers=1)
    assert images.pixels.shape == (N32, 1024) and images.shape == (32, 32) and not images.skipped
    meta = {}
    for f in (root / "metadata").iterdir():
        for line in f.read_text().splitlines():
            fields = line.split()
            meta[str(root / fields[0] / fields[1])] = int(fields[3])
    assert images.labels.tolist() == [meta[p] for p in images.paths]
    for row, path in zip(images.pixels, images.paths, strict=True):
        with Image.open(path) as im:
            np.testing.assert_array_equal(row, np.asarray(im).reshape(-1))

    splits = pf.read_pathfinder(root, max_len=1024, split_seed=42, workers=1)
    assert {k: len(v[1]) for k, v in splits.items()} == {"train": 192, "val": 24, "test": 24}
    idx = pf.split_indices(N32, 42)
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(N32))  # disjoint, complete
    for name, (ids, labels) in splits.items():
        assert ids.dtype == np.int64 and labels.dtype == np.int64
        np.testing.assert_array_equal(ids, images.pixels[idx[name]])
        np.testing.assert_array_equal(labels, images.labels[idx[name]])
    again = pf.read_pathfinder(root, max_len=1024, split_seed=42, workers=1)
    assert all(np.array_equal(again[k][0], splits[k][0]) for k in splits)
    other = pf.split_indices(N32, 7)
    assert not np.array_equal(other["train"], idx["train"])


def test_parallel_reader_matches_serial(data_root):
    root = folder(data_root, 32)
    serial = pf.read_images(root, workers=1)
    parallel = pf.read_images(root, workers=2, chunk_size=50)
    np.testing.assert_array_equal(serial.pixels, parallel.pixels)
    assert serial.paths == parallel.paths
    big = pf.read_pathfinder(folder(data_root, 128), max_len=128 * 128, workers=1, dtype=np.uint8)
    assert big["train"][0].shape[1] == 16384 and big["train"][0].dtype == np.uint8


def test_split_fractions_are_checked():
    with pytest.raises(LRAError, match="splits"):
        pf.split_indices(10, 0, (0.8, 0.3, 0.1))


@pytest.fixture
def copy32(data_root, tmp_path) -> Path:
    dst = tmp_path / "pathfinder32" / "curv_contour_length_14"
    shutil.copytree(folder(data_root, 32), dst)
    return dst


def test_empty_png_is_skipped_and_reported(copy32, caplog):
    victim = copy32 / "imgs" / "1" / "sample_7.png"
    victim.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="lra.data.pathfinder"):
        images = pf.read_images(copy32, max_len=1024, workers=1)
    assert len(images.labels) == N32 - 1 and images.skipped == [str(victim)]
    assert str(victim) not in images.paths
    assert "skipped 1 empty" in caplog.text
    splits = pf.read_pathfinder(copy32, max_len=1024, workers=1)
    assert sum(len(v[1]) for v in splits.values()) == N32 - 1


def test_binary_npy_metadata_is_read(copy32):
    meta = copy32 / "metadata" / "2.npy"
    rows = [line.split() for line in meta.read_text().splitlines()]
    with meta.open("wb") as f:
        np.save(f, np.array(rows))  # what drewlinsley/pathfinder's save_metadata writes
    images = pf.read_images(copy32, workers=1)
    assert len(images.labels) == N32


def test_wrong_size_png_names_the_file(copy32):
    victim = copy32 / "imgs" / "0" / "sample_3.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(victim)
    with pytest.raises(LRAError, match=r"sample_3\.png: expected a 32x32 image, found 64x64"):
        pf.read_images(copy32, max_len=1024, workers=1)
    with pytest.raises(LRAError, match=r"sample_0\.png: expected a 64x64 image, found 32x32"):
        pf.read_images(copy32, max_len=4096, workers=1)
    with pytest.raises(LRAError, match=r"sample_0\.png: expected 1000 pixels \(max_len\), found a 32x32 image"):
        pf.read_images(copy32, max_len=1000, workers=1)


def test_wrong_mode_png_names_the_file(copy32):
    victim = copy32 / "imgs" / "2" / "sample_5.png"
    Image.new("RGB", (32, 32)).save(victim)
    with pytest.raises(LRAError, match=r"sample_5\.png: expected an 8-bit grayscale PNG \(mode L\), found mode RGB"):
        pf.read_images(copy32, max_len=1024, workers=1)


def test_missing_png_names_the_file(copy32):
    (copy32 / "imgs" / "0" / "sample_9.png").unlink()
    with pytest.raises(LRAError, match=r"sample_9\.png: image listed in the metadata does not exist"):
        pf.read_images(copy32, max_len=1024, workers=1)


def _edit_line(meta: Path, line_no: int, new: str) -> None:
    lines = meta.read_text().splitlines()
    lines[line_no - 1] = new
    meta.write_text("\n".join(lines) + "\n")


def test_malformed_metadata_line_names_file_and_line(copy32):
    meta = copy32 / "metadata" / "1.npy"
    _edit_line(meta, 4, "imgs/1 sample_3.png 3")
    with pytest.raises(LRAError, match=rf"{meta}:4: malformed metadata line, expected 11"):
        pf.read_pathfinder(copy32, max_len=1024, workers=1)
    _edit_line(meta, 4, "imgs/1 sample_3.png 3 yes 1.0 14 4 2 0.5 1 1")
    with pytest.raises(LRAError, match=rf"{meta}:4: label .* 'yes' is not an integer"):
        pf.read_pathfinder(copy32, max_len=1024, workers=1)


def test_label_out_of_range_names_file_and_line(copy32):
    meta = copy32 / "metadata" / "0.npy"
    _edit_line(meta, 10, "imgs/0 sample_9.png 9 2 1.0 14 4 2 0.5 1 1")
    with pytest.raises(LRAError, match=rf"{meta}:10: label 2 is not 0 or 1"):
        pf.read_pathfinder(copy32, max_len=1024, workers=1)


def test_missing_directory_says_how_to_generate(tmp_path):
    missing = tmp_path / "pathfinder32" / "curv_contour_length_14"
    with pytest.raises(LRAError) as err:
        pf.read_pathfinder(missing, max_len=1024)
    assert str(missing / "metadata") in str(err.value)
    assert "python -m lra.data pathfinder --out DIR" in str(err.value)
    (missing / "metadata").mkdir(parents=True)
    with pytest.raises(LRAError, match="no metadata"):
        pf.read_pathfinder(missing, max_len=1024)


def test_bad_parameters_are_refused():
    cfg = pf.PathfinderConfig.lra(32)
    with pytest.raises(LRAError, match="continuity"):
        pf.generate_batch(pf.PathfinderConfig(**{**cfg.__dict__, "continuity": 0.0}), 2)


# --- speed (printed, not asserted) ---------------------------------------------------------------------------


def test_speed_is_printed(capsys):
    rates = {32: pf.measure_images_per_second(32, n_images=300, write=False)}
    rates[128] = pf.measure_images_per_second(128, n_images=60, write=False)
    with capsys.disabled():
        print(
            "\ngenerator (one core, PNG encoded, not written): "
            + ", ".join(f"{res}x{res}: {r:.0f} images/s" for res, r in rates.items())
        )
    assert all(r > 0 for r in rates.values())


# --- diagnostic variants ---------------------------------------------------------------------------------------


def test_a_set_variant_is_written_to_its_own_folder_with_the_changed_parameter(tmp_path, capsys):
    """`--set num_distractor_snakes=0 --name easy-nodistract`: the images carry only the two target snakes (a
    sanity task for a model that stays at chance), in pathfinder32/easy-nodistract, and the LRA folders are
    untouched; bad settings are one-line errors."""
    from lra.data.__main__ import main

    args = ["pathfinder", "--out", str(tmp_path), "--difficulty", "easy", "--num-images", "8", "--workers", "1"]
    assert main([*args, "--set", "num_distractor_snakes=0", "--name", "easy-nodistract"]) == 0
    folder = tmp_path / "pathfinder32" / "easy-nodistract"
    assert len(list((folder / "imgs").rglob("*.png"))) == 8
    assert not (tmp_path / "pathfinder32" / "curv_baseline").exists()
    base = pf.PathfinderConfig.lra(32, "easy")
    ours = pf.generate_batch(pf.replace_settings(base, {"num_distractor_snakes": 0}), 4, truth=True)
    assert all(len(s.snakes) == 2 for s in ours)  # the targets alone
    uniform = pf.replace_settings(base, {"seed_angle_window": None})  # every distractor placed
    assert len(pf.generate_batch(uniform, 1, truth=True)[0].snakes) == 2 + base.num_distractor_snakes
    capsys.readouterr()
    for bad, message in [
        (["--set", "num_distractor_snakes=0"], "--name"),
        (["--set", "bogus=1", "--name", "x"], "FIELD one of"),
        (["--set", "num_distractor_snakes=many", "--name", "x"], "is not a int"),
    ]:
        assert main([*args, *bad]) != 0
        assert message in capsys.readouterr().err


def test_seed_angle_window_reproduces_the_reference_distractor_count_and_seed_direction():
    """The reference's cv2.dilate border makes a first paddle possible only for directions in a ~30 degree window:
    target snake 0 always starts up-left and only ~1 in 3 easy distractors gets placed (3.2 of 10 on a port of the
    reference). With a uniform direction (`None`) nearly every distractor is placed and snake 0 points anywhere."""
    base = pf.PathfinderConfig.lra(32, "easy")
    assert base.seed_angle_window == (-150, -121)
    counts = {}
    for window in (base.seed_angle_window, None):
        batch = pf.generate_batch(pf.replace_settings(base, {"seed_angle_window": window}), 200, seed=5, truth=True)
        counts[window] = np.mean([len(s.snakes) - 2 for s in batch])
        first = np.array([s.segments[0][0] for s in batch])  # snake 0's first paddle: y0, x0, y1, x1
        angle = np.degrees(np.arctan2(first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]))
        step = 360 / pf._tables(base, 1).K  # directions are quantised to the table's K
        inside = (angle >= -150 - step / 2 - 1e-6) & (angle <= -121 + step / 2 + 1e-6)
        assert inside.all() if window else inside.mean() < 0.3
    assert counts[None] > base.num_distractor_snakes - 0.1  # nearly all
    assert 2.0 < counts[base.seed_angle_window] < 4.5
    assert pf.parse_settings(["seed_angle_window=none"]) == {"seed_angle_window": None}
    assert pf.parse_settings(["seed_angle_window=-100,-80"]) == {"seed_angle_window": (-100, -80)}
    with pytest.raises(LRAError, match="seed_angle_window"):
        pf.replace_settings(base, {"seed_angle_window": (10, -10)})


def test_patches_are_rounded_to_8_bits_as_the_reference_imresize():
    tab = pf._tables(pf.PathfinderConfig.lra(32, "easy"), 1)
    for patch in (tab.patches, tab.markers):
        assert patch.min() >= 0 and patch.max() <= 1
        np.testing.assert_allclose(patch * 255, np.rint(patch * 255), atol=1e-3)
        assert ((patch > 0) & (patch < 0.5 / 255)).sum() == 0
