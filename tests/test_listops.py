"""ListOps generator -> official TSV -> reader, with labels re-checked by an independent evaluator."""

from __future__ import annotations

import csv
import statistics

import numpy as np
import pytest

from lra import LRAError
from lra.data import listops


def evaluate_tokens(tokens: list[str]) -> int:
    """A stack evaluator over the file's tokens, independent of the generator's tree code."""
    stack: list[list] = []
    result = None
    for tok in tokens:
        if tok in ("(", ")"):
            continue
        if tok.startswith("["):
            stack.append([tok])
        elif tok == "]":
            op, *args = stack.pop()
            if op == "[MIN":
                value = min(args)
            elif op == "[MAX":
                value = max(args)
            elif op == "[MED":
                value = int(statistics.median(args))
            else:
                value = sum(args) % 10
            if stack:
                stack[-1].append(value)
            else:
                result = value
        else:
            if stack:
                stack[-1].append(int(tok))
            else:
                result = int(tok)
    assert not stack
    return result


SMALL = listops.ListOpsConfig(
    num_train=300, num_val=50, num_test=50, max_depth=6, min_length=20, max_length=200, seed=3
)


def test_round_trip_labels_lengths_and_layout(tmp_path):
    paths = listops.write_splits(tmp_path / "listops-1000", SMALL)
    assert sorted(p.name for p in paths.values()) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    seen = set()
    for split, n in (("train", 300), ("val", 50), ("test", 50)):
        with paths[split].open() as f:
            rows = list(csv.reader(f, delimiter="\t"))
        assert rows[0] == ["Source", "Target"]
        assert len(rows) == n + 1
        for source, target in rows[1:]:
            assert evaluate_tokens(source.split()) == int(target)
            assert source not in seen  # unique across splits
            seen.add(source)
        ids, labels = listops.read_tsv(paths[split], max_len=256)
        assert ids.shape == (n, 256) and labels.tolist() == [int(t) for _, t in rows[1:]]
        lengths = (ids != 0).sum(1)
        # the token count after dropping parentheses is the generator's length: strictly inside the bounds
        assert lengths.min() > SMALL.min_length and lengths.max() < SMALL.max_length
        for (source, _), row in zip(rows[1:], ids, strict=True):
            expected = source.replace("]", "X").replace("(", "").replace(")", "").split()
            assert [listops.VOCAB[i] for i in row[row != 0]] == expected


def test_generator_is_deterministic_per_seed():
    a, b = listops.generate(SMALL), listops.generate(SMALL)
    c = listops.generate(listops.ListOpsConfig(**{**SMALL.__dict__, "seed": 4}))
    assert a == b and a != c


def test_median_of_even_count_truncates():
    tree = ((((("[MED", 1), 2), 4), 9), "]")
    assert listops.to_value(tree) == int(np.median([1, 2, 4, 9])) == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ("Src\tTarget\n", "expected the header"),
        ("Source\tTarget\n( [MAX 1 2 ] )\t11\n", "out of range"),
        ("Source\tTarget\n( [MAX 1 2 ] )\tseven\n", "is not an integer"),
        ("Source\tTarget\n( [MAX 1 2 ] )\n", "expected 2 tab-separated columns"),
    ],
)
def test_malformed_tsv_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "basic_train.tsv"
    path.write_text(content)
    with pytest.raises(LRAError, match=message) as err:
        listops.read_tsv(path, 16)
    assert str(path) in str(err.value)


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(LRAError, match="python -m lra.data listops"):
        listops.read_tsv(tmp_path / "nope.tsv", 16)


def test_impossible_request_fails_clearly():
    with pytest.raises(LRAError, match="unique expressions"):
        listops.generate(
            listops.ListOpsConfig(num_train=500, num_val=0, num_test=0, max_depth=2, min_length=3, max_length=5)
        )


def test_parallel_generation_gives_the_same_files():
    cfg = listops.ListOpsConfig(num_train=150, num_val=20, num_test=20, max_depth=5, min_length=10, max_length=120)
    assert listops.generate(cfg, workers=2, chunk_size=40) == listops.generate(cfg, workers=1, chunk_size=40)
