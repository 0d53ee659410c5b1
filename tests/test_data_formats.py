"""Readers on small files in each official format, the cache, length-aware batching, and each task end to
end on files."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import run
from lra import LRAError
from lra.data import byte_text, cifar
from lra.data.datamodule import LengthGroupedBatches, LRADataModule, SplitDataset, valid_lengths
from lra.data.tasks import Split, load_splits
from tests.data_files import REVIEWS, write_aan, write_aclimdb, write_cifar


def test_byte_encoding_is_utf8_bytes_plus_one():
    ids = byte_text.encode_bytes(["caf\u00e9", "abcdef"], seq_len=4, max_len=6)
    assert ids.tolist() == [[100, 98, 103, 0xC3 + 1, 0, 0], [98, 99, 100, 101, 0, 0]]


def test_aclimdb_tree(tmp_path):
    raw = byte_text.read_imdb(write_aclimdb(tmp_path, copies=1))
    texts, labels = raw["train"]
    assert len(texts) == 4 and sorted(labels.tolist()) == [0, 0, 1, 1]
    positives = {t.rsplit(" #", 1)[0] for t, y in zip(texts, labels, strict=True) if y == 1}
    assert set(REVIEWS[("train", "pos")]) <= positives


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_imdb_hugging_face_copy(tmp_path, layout):
    import datasets

    dd = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_dict({"text": ["good", "bad", "fine"], "label": [1, 0, 1]})
            for s in ("train", "test")
        }
    )
    folder = tmp_path / "imdb"
    if layout == "save_to_disk":
        dd.save_to_disk(str(folder))
    else:
        folder.mkdir()
        for s, d in dd.items():
            d.to_parquet(str(folder / f"{s}-00000-of-00001.parquet"))
    raw = byte_text.read_imdb(folder)
    assert raw["test"][0] == ["good", "bad", "fine"] and raw["test"][1].tolist() == [1, 0, 1]


def test_aan_reader(tmp_path):
    folder = write_aan(tmp_path, rows=6)
    ids, labels = byte_text.read_aan(folder / "new_aan_pairs.train.tsv", seq_len=10, max_len=16)
    assert ids.shape == (6, 2, 16) and labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert (ids[:, :, 10:] == 0).all() and (ids[:, :, :10] > 0).all()
    first_doc = (folder / "new_aan_pairs.train.tsv").read_text().split("\n")[0].split("\t")[3]
    assert ids[0, 0, :10].tolist() == [b + 1 for b in first_doc.encode()[:10]]


@pytest.mark.parametrize(
    "line, message",
    [
        ("1.0\ta\tb\tonly four", "expected 5 tab-separated columns"),
        ("yes\ta\tb\tx\ty", "is not a number"),
        ("2\ta\tb\tx\ty", "label 2 is not 0 or 1"),
    ],
)
def test_aan_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "new_aan_pairs.train.tsv"
    path.write_text("0\ta\tb\tx\ty\n" + line + "\n")
    with pytest.raises(LRAError, match=f"{path}:2: .*{message}"):
        byte_text.read_aan(path, 8, 8)


def test_cifar_batches_to_gray(tmp_path):
    folder = write_cifar(tmp_path, per_batch=10)
    splits = cifar.read_cifar(folder)
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [45, 5, 10]
    with (folder / "data_batch_1").open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    rgb = batch[b"data"][0].reshape(3, 32, 32).astype(float)
    expected = np.rint(0.2989 * rgb[0] + 0.5870 * rgb[1] + 0.1140 * rgb[2]).reshape(-1)
    assert splits["train"][0][0].tolist() == expected.astype(int).tolist()
    assert splits["train"][1][0] == batch[b"labels"][0]


@pytest.mark.parametrize(
    "change, message",
    [
        ({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, r"must be \(n, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "label 10, outside 0..9"),
        ({b"pixels": 1}, "is not a CIFAR-10 python batch"),
    ],
)
def test_cifar_bad_batches(tmp_path, change, message):
    folder = write_cifar(tmp_path, per_batch=4)
    with (folder / "data_batch_3").open("wb") as f:
        pickle.dump(change, f)
    with pytest.raises(LRAError, match=message) as err:
        cifar.read_cifar(folder)
    assert "data_batch_3" in str(err.value)


@pytest.mark.parametrize("task", ["text", "retrieval", "image", "listops"])
def test_missing_data_names_path_and_how_to_get_it(tmp_path, task, cfg_factory):
    cfg = cfg_factory(f"task={task}")
    with pytest.raises(LRAError, match=f"data not found at {tmp_path / 'data'}"):
        load_splits(dict(cfg.task), cfg.data_dir)


def _task(cfg_factory, *over):
    cfg = cfg_factory("experiment=smoke", "task.source=files", *over)
    return cfg, dict(cfg.task)


def test_image_longer_than_max_len_is_a_clear_error(tmp_path, cfg_factory):
    write_cifar(tmp_path / "data", per_batch=4)
    cfg, task = _task(cfg_factory, "task=image")
    with pytest.raises(LRAError, match="set task.max_len=1024"):
        load_splits(task, cfg.data_dir)


def test_cache_hit_corruption_and_invalidation(tmp_path, cfg_factory, caplog):
    write_aan(tmp_path / "data", rows=12)
    cfg, task = _task(cfg_factory, "task=retrieval")
    first = load_splits(task, cfg.data_dir, cache_dir=cfg.cache_dir)
    second = load_splits(task, cfg.data_dir, cache_dir=cfg.cache_dir)
    assert not first.from_cache and second.from_cache
    np.testing.assert_array_equal(np.asarray(second.train.ids), first.train.ids)
    entry = next(p for p in (tmp_path / "data" / ".cache").iterdir() if p.is_dir())  # beside it: its lock
    # corrupt one array: detected by its CRC, rebuilt
    f = entry / "train_ids.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        third = load_splits(task, cfg.data_dir, cache_dir=cfg.cache_dir)
    assert not third.from_cache and "damaged" in caplog.text
    np.testing.assert_array_equal(np.asarray(third.train.ids), first.train.ids)
    # a partial entry (no meta.json) is rebuilt
    (entry / "meta.json").unlink()
    assert not load_splits(task, cfg.data_dir, cache_dir=cfg.cache_dir).from_cache
    # changed source files or a changed data option give a new entry
    write_aan(tmp_path / "data", rows=14, seed=1)
    fourth = load_splits(task, cfg.data_dir, cache_dir=cfg.cache_dir)
    assert not fourth.from_cache and len(fourth.train.labels) == 14
    assert not load_splits({**task, "seq_len": 7}, cfg.data_dir, cache_dir=cfg.cache_dir).from_cache


BUILD_ONCE = """
import sys, time, numpy as np
from lra.data.cache import cached_arrays
def build():
    with open(sys.argv[2], "a") as f:
        f.write("built\\n")
    time.sleep(1.5)  # long enough that the others arrive while it builds
    return {"x": np.arange(10)}
arrays, hit = cached_arrays(sys.argv[1], "t", {"k": 1}, build)
print(int(arrays["x"].sum()), hit)
"""


def test_processes_wanting_one_missing_entry_build_it_once(tmp_path):
    # Five Pathfinder runs started together on a fresh machine once each decoded 200K PNGs (session 14): the
    # first builds, the others wait for its lock and load what it wrote.
    import subprocess
    import sys

    log = tmp_path / "builds.log"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD_ONCE, str(tmp_path / "cache"), str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert log.read_text().splitlines() == ["built"]
    assert sorted(o[0].split()[1] for o in outs) == ["False", "True", "True"]
    assert {o[0].split()[0] for o in outs} == {"45"}
    assert sum("another process is building it" in o[1] for o in outs) >= 1


def test_length_grouped_batches_cover_each_example_once_and_trim_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=203)
    ids = np.zeros((203, 64), dtype=np.uint16)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, 9, size=n)
    assert valid_lengths(ids).tolist() == lengths.tolist()
    sampler = LengthGroupedBatches(lengths, batch_size=16, shuffle=True, seed=0, pool=4)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(203)) and len(batches) == len(sampler)
    assert [len(b) for b in list(sampler)] != [len(b) for b in batches] or list(sampler) != batches  # reshuffled
    ds = SplitDataset(Split(ids, np.arange(203)), multiple=1)
    spread = [lengths[b].max() - lengths[b].min() for b in batches]
    assert np.mean(spread) < 0.5 * (lengths.max() - lengths.min())  # grouped by length
    x, y = ds[batches[0]]
    assert x.dtype == torch.int64 and x.shape[1] == lengths[sorted(batches[0])].max()
    assert sorted(y.tolist()) == sorted(batches[0])
    x8, _ = SplitDataset(Split(ids, np.arange(203)), multiple=8)[batches[0]]
    assert x8.shape[1] == min(64, -(-x.shape[1] // 8) * 8) and (x8[:, : x.shape[1]] == x).all()


def test_trimmed_batches_give_the_same_logits(cfg_factory):
    """The model sees batches cut to their longest row; that must equal the full padded batch."""
    from lra.module import LRAClassifier

    for pooling, over_padding in (("mean", False), ("mean", True), ("cls", False)):
        cfg = cfg_factory(
            "experiment=smoke",
            f"model.pooling={pooling}",
            f"model.mean_over_padding={over_padding}",
            "attention=nalaformer",
        )
        model = LRAClassifier.from_config(OmegaConf.to_container(cfg, resolve=True), 10).double().eval()
        ids = torch.zeros(3, 64, dtype=torch.long)
        ids[0, :40], ids[1, :7], ids[2, :23] = 3, 5, 7
        ids[:, 1::3] = ids[:, 1::3] * (ids[:, 1::3] > 0) + (ids[:, 1::3] > 0) * 2
        torch.testing.assert_close(model(ids[:, :40]), model(ids))


@pytest.mark.parametrize("attention", ["softmax", "polaformer", "nalaformer"])
def test_mask_attention_false_lets_attention_see_the_padding(cfg_factory, attention):
    """``model.mask_attention=false`` (the released relu-feature modules never apply a mask): what the padded
    positions hold then changes the logits; by default it cannot, whatever the attention."""
    from lra.module import LRAClassifier

    ids = torch.zeros(2, 64, dtype=torch.long)
    ids[0, :40], ids[1, :23] = 3, 5
    ids[:, 1:40:3] *= 2
    for masked in (True, False):
        cfg = cfg_factory("experiment=smoke", f"attention={attention}", f"model.mask_attention={masked}")
        model = LRAClassifier.from_config(OmegaConf.to_container(cfg, resolve=True), 10).double().eval()
        before = model(ids)
        with torch.no_grad():
            model.model.encoder.embed.weight[0].normal_()  # the embedding of the padding token
        changed = (model(ids) - before).abs().max().item()
        assert (changed < 1e-12) if masked else (changed > 1e-6), (masked, changed)


@pytest.mark.parametrize(
    "task, writer, length", [("text", write_aclimdb, 64), ("retrieval", write_aan, 64), ("image", write_cifar, 1024)]
)
def test_task_end_to_end_on_official_format_files(tmp_path, cfg_factory, task, writer, length):
    writer(tmp_path / "data")
    cfg = cfg_factory(
        "experiment=smoke",
        f"task={task}",
        "task.source=files",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        f"task.max_len={length}",
    )
    row = run.train(cfg)
    assert row["status"] == "ok" and row["data"] == "real" and row["steps"] == 6
    assert row["data_source"] == f"files:{tmp_path / 'data' / cfg.task.path}"
    dm = LRADataModule(dict(cfg.task), cfg.data_dir, 4, cache_dir=cfg.cache_dir)
    assert dm.prepare().from_cache  # the run filled the cache


def test_cli_prepares_from_an_archive_and_explains_what_is_missing(tmp_path, capsys):
    import tarfile

    from lra.data.__main__ import main

    assert main(["image", "--out", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert "nothing at" in err and "cifar-10-python.tar.gz" in err
    write_cifar(tmp_path / "download", per_batch=4)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "download" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert main(["image", "--out", str(tmp_path / "root"), "--from", str(archive)]) == 0
    assert "train 18, val 2, test 4 examples" in capsys.readouterr().out
    assert main(["image", "--out", str(tmp_path / "root")]) == 0
    assert "loaded from cache" in capsys.readouterr().out


def test_pathfinder_end_to_end_from_our_generator(tmp_path, cfg_factory):
    from lra.data import pathfinder as pf_generator
    from lra.data.__main__ import main

    assert (
        main(
            [
                "pathfinder",
                "--out",
                str(tmp_path / "data"),
                "--num-images",
                "200",
                "--batch-size",
                "100",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    cfg = cfg_factory(
        "experiment=smoke",
        "task=pathfinder",
        "task.source=files",
        "task.max_len=1024",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
    )
    row = run.train(cfg)
    assert row["status"] == "ok" and row["data"] == "real"
    assert row["data_source"].endswith("pathfinder32/curv_contour_length_14")
    assert row["data_generator"] == pf_generator.GENERATOR_VERSION  # the generator's stamp reaches the row
    splits = LRADataModule(dict(cfg.task), cfg.data_dir, 4, cache_dir=cfg.cache_dir).prepare()
    assert [len(splits[s].labels) for s in ("train", "val", "test")] == [160, 20, 20]
    assert 0.3 < np.asarray(splits.train.labels).mean() < 0.7


def test_partial_validation_uses_the_first_examples_not_the_shortest(cfg_factory):
    """limit_val_batches x batch_size examples, taken in file order (the loader's batches go in length order, so
    Lightning's own limit would keep the shortest ones), batched by eval_batch_size."""
    import run

    cfg = cfg_factory("experiment=smoke", "trainer.limit_val_batches=3", "task.batch_size=4", "task.eval_batch_size=5")
    seen = {}

    class Spy(LRADataModule):
        def val_dataloader(self):
            loader = super().val_dataloader()
            seen["batches"] = list(loader.sampler)
            return loader

    original = run.LRADataModule
    run.LRADataModule = Spy
    try:
        row = run.train(cfg)
    finally:
        run.LRADataModule = original
    assert row["status"] == "ok"
    batches = seen["batches"]
    assert sorted(i for b in batches for i in b) == list(range(12))  # 3 x 4 examples: the first twelve
    assert [len(b) for b in batches] == [5, 5, 2]
    splits = LRADataModule(dict(cfg.task), cfg.data_dir, 4, cache_dir=cfg.cache_dir).prepare()
    lengths = valid_lengths(splits.val.ids)
    assert sorted(lengths[:12]) != sorted(np.sort(lengths)[:12]) or len(set(lengths)) == 1  # not the shortest


@pytest.mark.parametrize("knob", ["eval_batch_size", "pad_multiple"])
def test_eval_batch_size_and_padding_do_not_change_the_logits(cfg_factory, knob):
    """Each example's logits are the same whatever batch it is evaluated in, and however far that batch is
    padded (up to float rounding: an untrained model's near-ties may still flip an argmax, so accuracy is not
    compared). Both are speed knobs: run ids ignore them."""
    from lra.module import LRAClassifier

    cfg = cfg_factory("experiment=smoke", "model.dropout=0.0")
    config = OmegaConf.to_container(cfg, resolve=True)
    model = LRAClassifier.from_config(config, 10).double().eval()
    logits, widths = [], set()
    for size in (3, 64):
        task = {**config["task"], knob: size}
        dm = LRADataModule(task, cfg.data_dir, 4, cache_dir=cfg.cache_dir, eval_batch_size=task["eval_batch_size"])
        dm.setup()
        loader = dm.val_dataloader()
        by_index = {}
        with torch.no_grad():
            for index, (x, _) in zip(loader.sampler, loader, strict=True):
                for i, row in zip(sorted(index), model(x), strict=True):
                    by_index[i] = row
                widths.add((size, x.shape[-1]))
        logits.append(torch.stack([by_index[i] for i in sorted(by_index)]))
    assert len(logits[0]) == len(dm.prepare().val.labels)
    torch.testing.assert_close(logits[0], logits[1])
    if knob == "pad_multiple":  # the padding really differed: widths are multiples of 3, then all the full 64
        assert {w % 3 for s, w in widths if s == 3} == {0} and {w for s, w in widths if s == 64} == {64}
        assert any(w < 64 for s, w in widths if s == 3)


@pytest.mark.parametrize("docs", [1, 2])
def test_batches_gathered_on_the_device_equal_the_host_batches(docs):
    """data_on_device copies a split once and gathers batches there; the batches (cut, order, dtype, labels) must
    be the ones the host path builds, for one- and two-document tasks. Tested with the CPU as the device."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 60, size=(97, docs))
    ids = np.zeros((97, docs, 64), dtype=np.uint16)
    for i in range(97):
        for d in range(docs):
            ids[i, d, : lengths[i, d]] = rng.integers(1, 300, size=lengths[i, d])
    ids = ids[:, 0] if docs == 1 else ids
    split = Split(ids, rng.integers(0, 3, size=97))
    host, resident = SplitDataset(split, multiple=8), SplitDataset(split, multiple=8, device="cpu")
    for batch in LengthGroupedBatches(valid_lengths(ids), batch_size=10, shuffle=True, seed=0):
        (x, y), (xr, yr) = host[batch], resident[batch]
        assert x.dtype == xr.dtype == torch.int64 and x.shape == xr.shape and x.shape[-1] % 8 == 0
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_data_on_device_is_a_speed_knob(cfg_factory):
    """Same run id, same result with the splits resident (here: on the CPU) as with host batches."""
    rows = [run.train(cfg_factory("experiment=smoke", f"data_on_device={v}", "resume=false")) for v in (False, True)]
    assert rows[0]["run_id"] == rows[1]["run_id"]
    assert rows[0]["test_acc"] == rows[1]["test_acc"] and rows[0]["final_train_loss"] == rows[1]["final_train_loss"]
    with pytest.raises(LRAError, match="data_on_device='gpu'"):
        LRADataModule({}, "x", 4, data_on_device="gpu")


def test_cache_fingerprint_names_files_by_their_path_below_the_root(tmp_path):
    """The fingerprint hashes each file's path relative to the data root, size and mtime (so caches written
    before the faster walk stay valid), and changes when any file does."""
    import hashlib
    import os

    from lra.data.cache import fingerprint

    for rel in ("a.txt", "imgs/0/x.png", "imgs/1/y.png", "metadata/0.npy"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    h = hashlib.sha1()
    for root, dirs, files in os.walk(tmp_path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            h.update(f"{os.path.relpath(full, tmp_path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    before = fingerprint(tmp_path)
    assert before == h.hexdigest()
    (tmp_path / "imgs/1/y.png").write_text("changed")
    assert fingerprint(tmp_path) != before


def test_pixel_levels_quantise_ink_and_keep_padding():
    """task.pixel_levels (a Pathfinder diagnostic): pixels 1..255 fall into 1..levels in order, 0 stays padding
    (or becomes token 1 with mask_pixel_zero off); a bad value is a one-line error; absent, nothing changes."""
    from lra.data.tasks import pixel_tokens

    pixels = np.array([[0, 1, 63, 64, 127, 128, 255]], dtype=np.uint8)
    assert pixel_tokens(pixels, {}).tolist() == pixels.tolist()
    assert pixel_tokens(pixels, {"pixel_levels": 4}).tolist() == [[0, 1, 1, 2, 2, 3, 4]]
    assert pixel_tokens(pixels, {"pixel_levels": 4, "mask_pixel_zero": False}).tolist() == [[1, 2, 2, 3, 3, 4, 5]]
    assert pixel_tokens(pixels, {"pixel_levels": 1}).tolist() == [[0, 1, 1, 1, 1, 1, 1]]
    with pytest.raises(LRAError, match="task.pixel_levels=0"):
        pixel_tokens(pixels, {"pixel_levels": 0})


def test_bucket_by_length_off_draws_batches_at_random(cfg_factory):
    """`+task.bucket_by_length=false`: training batches are random draws (as NYS's sampler), not groups of
    similar length; every example still comes once per epoch."""
    spreads = {}
    for bucket in (True, False):
        cfg = cfg_factory("experiment=smoke", f"+task.bucket_by_length={str(bucket).lower()}")
        dm = LRADataModule(dict(cfg.task), cfg.data_dir, 8, cache_dir=cfg.cache_dir)
        lengths = valid_lengths(dm.prepare()["train"].ids)
        batches = list(dm.train_dataloader().sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        spreads[bucket] = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spreads[True] < 0.5 * spreads[False]
