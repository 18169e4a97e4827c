"""snas_fast.data: digits and CIFAR-10 loaders, their splits, and the errors for missing or corrupt files."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from snas_fast.engine.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DIGITS_TEST_FRACTION,
    DatasetError,
    digits_split_indices,
    load_cifar10,
    load_dataset,
    load_digits,
    make_loaders,
)
from sklearn.datasets import load_digits as sklearn_digits

# A fake CIFAR-10 of 5 x 20 training images and 20 test images; label = (batch * 7 + row) % 10 so that every
# image's label says where it came from.
PER_BATCH = 20


def _batch(batch_index: int, n: int = PER_BATCH) -> dict:
    rng = np.random.default_rng(batch_index)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[:, 0] = batch_index  # first red pixel names the batch, second the row: a test can trace every image
    data[:, 1] = np.arange(n)
    labels = [int((batch_index * 7 + r) % 10) for r in range(n)]  # a python list, as in the real files
    return {b"batch_label": f"batch {batch_index}".encode(), b"labels": labels, b"data": data,
            b"filenames": [f"img_{batch_index}_{r}.png".encode() for r in range(n)]}


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # protocol 2 like the real (python 2) files


def write_fake_cifar10(parent: Path) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _dump(_batch(i), folder / f"data_batch_{i}")
    _dump(_batch(6), folder / "test_batch")
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump({b"num_cases_per_batch": PER_BATCH, b"label_names": names, b"num_vis": 3072}, folder / "batches.meta")
    return folder


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
    return write_fake_cifar10(tmp_path)


def _expected_images(batch_index: int, rows) -> torch.Tensor:
    data = torch.from_numpy(_batch(batch_index)[b"data"][rows]).view(-1, 3, 32, 32).float() / 255
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (data - mean) / std


def _origin(images: torch.Tensor):
    """(batch, row) of each image from its first two raw pixels."""
    raw = images[:, 0, 0, :2] * CIFAR10_STD[0] + CIFAR10_MEAN[0]
    return [tuple(int(v) for v in p) for p in torch.round(raw * 255)]


def _assert_single_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg, f"message is not one line: {msg!r}"
    assert str(path) in msg, f"message does not name {path}: {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------------- digits


def test_digits_shapes_and_info():
    train, val, info = load_digits()
    x, y = train.tensors
    assert x.shape == (len(train), 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (len(train),) and y.dtype == torch.int64
    assert val.tensors[0].shape[1:] == (1, 8, 8) and val.tensors[1].dtype == torch.int64
    search_part = 1797 - math.ceil(1797 * DIGITS_TEST_FRACTION)
    assert len(train) + len(val) == search_part and abs(len(val) - search_part * 0.5) <= 1
    assert (info.num_classes, info.in_channels, info.image_size, info.name) == (10, 1, 8, "digits")
    assert (info.train_size, info.val_size) == (len(train), len(val))
    # normalised by the train split's statistics
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-5
    # the raw pixels were in [0, 1]: undo the normalisation
    raw = x * info.std[0] + info.mean[0]
    assert float(raw.min()) >= -1e-6 and float(raw.max()) <= 1 + 1e-6
    # stratified: every class in both splits, in about the same share
    for part in (train, val):
        counts = torch.bincount(part.tensors[1], minlength=10)
        assert int(counts.min()) > 0.8 * len(part) / 10


@pytest.mark.parametrize("val_fraction", [0.2, 0.5, 0.75])
def test_digits_split_sizes(val_fraction):
    train, val, info = load_digits(val_fraction=val_fraction)
    search_part = 1797 - math.ceil(1797 * DIGITS_TEST_FRACTION)
    assert len(train) + len(val) == search_part
    assert abs(len(val) - search_part * val_fraction) <= 1
    assert info.val_size == len(val)


@pytest.mark.parametrize("seed", [0, 5])
def test_digits_three_parts_are_disjoint_and_cover_the_set(seed):
    labels = np.asarray(sklearn_digits().target)
    train, val, test = digits_split_indices(labels, seed=seed)
    parts = [set(train.tolist()), set(val.tolist()), set(test.tolist())]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(parts[0] | parts[1] | parts[2]) == len(labels) == 1797
    assert abs(len(test) - 1797 * DIGITS_TEST_FRACTION) <= 1
    # the test part is fixed: no run's seed moves an image into or out of it
    assert set(digits_split_indices(labels, seed=seed + 1)[2].tolist()) == parts[2]
    for part in (train, val, test):  # stratified: every class in every part
        assert np.bincount(labels[part], minlength=10).min() > 0.8 * len(part) / 10


def test_digits_loaders_return_the_parts_they_name():
    bunch = sklearn_digits()
    raw = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    idx_train, idx_val, idx_test = digits_split_indices(bunch.target, seed=2)
    train, val, info = load_digits(seed=2)
    full, test, full_info = load_digits(seed=2, split="train_test")

    def unnormalise(ds, info):
        return ds.tensors[0] * info.std[0] + info.mean[0]

    torch.testing.assert_close(unnormalise(train, info), raw[idx_train], atol=1e-5, rtol=0)
    torch.testing.assert_close(unnormalise(val, info), raw[idx_val], atol=1e-5, rtol=0)
    torch.testing.assert_close(unnormalise(full, full_info), raw[np.concatenate([idx_train, idx_val])], atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(unnormalise(test, full_info), raw[idx_test], atol=1e-5, rtol=0)
    assert torch.equal(test.tensors[1], torch.from_numpy(bunch.target[idx_test]).long())
    # normalised by the statistics of the part a model trains on
    assert abs(float(full.tensors[0].mean())) < 1e-5


def test_digits_bad_split_and_test_fraction():
    with pytest.raises(ValueError, match=r"split: expected 'search' or 'train_test', got 'test'"):
        load_digits(split="test")
    with pytest.raises(ValueError, match=r"test_fraction: expected a number in \(0, 1\), got 1.0"):
        load_digits(test_fraction=1.0)


def test_digits_deterministic_per_seed():
    a_train, a_val, _ = load_digits(seed=3)
    b_train, b_val, _ = load_digits(seed=3)
    c_train, _, _ = load_digits(seed=4)
    for a, b in ((a_train, b_train), (a_val, b_val)):
        assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(a_train.tensors[1], c_train.tensors[1])


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5])
def test_digits_bad_fraction(bad):
    with pytest.raises(ValueError, match=r"val_fraction: expected a number in \(0, 1\), got"):
        load_digits(val_fraction=bad)


# ---------------------------------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_cifar10_search_split(cifar_dir, point_at):
    data_dir = cifar_dir if point_at == "folder" else cifar_dir.parent
    train, val, info = load_cifar10(data_dir, split="search", seed=0)
    assert len(train) == len(val) == 50
    for part in (train, val):
        x, y = part.tensors
        assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32
        assert y.shape == (50,) and y.dtype == torch.int64
    assert (info.name, info.num_classes, info.in_channels, info.image_size) == ("cifar10", 10, 3, 32)
    assert (info.train_size, info.val_size) == (50, 50)
    assert info.classes[0] == "airplane" and len(info.classes) == 10
    # the halves partition the 100 training images, and every image keeps its own label and pixels
    origins = _origin(train.tensors[0]) + _origin(val.tensors[0])
    assert sorted(origins) == [(b, r) for b in range(1, 6) for r in range(PER_BATCH)]
    labels = torch.cat([train.tensors[1], val.tensors[1]])
    assert labels.tolist() == [(b * 7 + r) % 10 for b, r in origins]
    b, r = origins[0]
    torch.testing.assert_close(train.tensors[0][:1], _expected_images(b, [r]))


def test_cifar10_search_seed_and_fraction(cifar_dir):
    a, _, _ = load_cifar10(cifar_dir, seed=1)
    b, _, _ = load_cifar10(cifar_dir, seed=1)
    c, _, _ = load_cifar10(cifar_dir, seed=2)
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(a.tensors[1], c.tensors[1])
    train, val, _ = load_cifar10(cifar_dir, val_fraction=0.2)
    assert (len(train), len(val)) == (80, 20)


def test_cifar10_train_test_split(cifar_dir):
    train, val, info = load_cifar10(cifar_dir.parent, split="train_test")
    assert (len(train), len(val)) == (100, 20) and (info.train_size, info.val_size) == (100, 20)
    assert train.tensors[0].shape == (100, 3, 32, 32) and val.tensors[0].shape == (20, 3, 32, 32)
    # train is the five batches in order, val the test batch
    assert _origin(train.tensors[0]) == [(b, r) for b in range(1, 6) for r in range(PER_BATCH)]
    assert train.tensors[1].tolist() == [(b * 7 + r) % 10 for b in range(1, 6) for r in range(PER_BATCH)]
    assert val.tensors[1].tolist() == [(6 * 7 + r) % 10 for r in range(PER_BATCH)]
    torch.testing.assert_close(val.tensors[0], _expected_images(6, slice(None)))


@pytest.mark.parametrize("split", ["search", "train_test"])
def test_cifar10_limit(cifar_dir, split):
    train, val, info = load_cifar10(cifar_dir, split=split, limit=7)
    full_train, full_val, _ = load_cifar10(cifar_dir, split=split)
    assert (len(train), len(val), info.train_size, info.val_size) == (7, 7, 7, 7)
    assert torch.equal(train.tensors[0], full_train.tensors[0][:7])
    assert torch.equal(val.tensors[1], full_val.tensors[1][:7])


def test_cifar10_without_meta(cifar_dir):
    (cifar_dir / "batches.meta").unlink()
    _, _, info = load_cifar10(cifar_dir)
    assert info.classes[-1] == "truck"


def test_cifar10_bad_arguments(cifar_dir):
    with pytest.raises(ValueError, match=r"split: expected 'search' or 'train_test', got 'test'"):
        load_cifar10(cifar_dir, split="test")
    with pytest.raises(ValueError, match=r"limit: expected None or a positive int, got 0"):
        load_cifar10(cifar_dir, limit=0)


# ---------------------------------------------------------------------------------------------------- errors


def test_error_nonexistent_dir(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(DatasetError) as err:
        load_cifar10(missing)
    assert "no such directory" in _assert_single_line_naming(err, missing)
    assert err.value.path == missing


def test_error_folder_without_batches(tmp_path):
    empty = tmp_path / "cifar-10-batches-py"
    empty.mkdir()
    (empty / "readme.html").write_text("nothing here")
    with pytest.raises(DatasetError) as err:
        load_cifar10(empty)
    assert "missing CIFAR-10 batch file" in _assert_single_line_naming(err, empty / "data_batch_1")
    # a parent that holds neither the folder nor batches names the parent
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(DatasetError) as err:
        load_cifar10(other)
    assert "holds neither" in _assert_single_line_naming(err, other)


def test_error_missing_test_batch_only_for_train_test(cifar_dir):
    (cifar_dir / "test_batch").unlink()
    load_cifar10(cifar_dir, split="search")  # the search split does not need it
    with pytest.raises(DatasetError) as err:
        load_cifar10(cifar_dir, split="train_test")
    _assert_single_line_naming(err, cifar_dir / "test_batch")


@pytest.mark.parametrize("corruption", ["truncated", "garbage", "empty", "text_with_newlines"])
def test_error_corrupt_batch(cifar_dir, corruption):
    path = cifar_dir / "data_batch_3"
    blob = path.read_bytes()
    payload = {
        "truncated": blob[: len(blob) // 2],
        "garbage": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "empty": b"",
        "text_with_newlines": b"<html>\n<body>\nNot Found\n</body>\n</html>\n",
    }[corruption]
    path.write_bytes(payload)
    with pytest.raises(DatasetError) as err:
        load_cifar10(cifar_dir)
    assert "not a CIFAR-10 python batch" in _assert_single_line_naming(err, path)


def test_error_batch_that_would_run_code(cifar_dir, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = cifar_dir / "data_batch_2"
    _dump({b"data": Evil(), b"labels": []}, path)
    with pytest.raises(DatasetError) as err:
        load_cifar10(cifar_dir)
    assert "print, which a CIFAR-10 batch never holds" in _assert_single_line_naming(err, path)
    assert "must not run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "data, expected",
    [
        (np.zeros((PER_BATCH, 1024), np.uint8), r"\[N, 3072\], got uint8 \[20, 1024\]"),
        (np.zeros((PER_BATCH, 3, 32, 32), np.uint8), r"\[N, 3072\], got uint8 \[20, 3, 32, 32\]"),
        (np.zeros((PER_BATCH, 3072), np.float32), r"got float32 \[20, 3072\]"),
        ([[0] * 3072] * PER_BATCH, r"got list"),
    ],
    ids=["short_rows", "4d", "float", "list"],
)
def test_error_wrong_shaped_data(cifar_dir, data, expected):
    path = cifar_dir / "data_batch_5"
    batch = _batch(5)
    batch[b"data"] = data
    _dump(batch, path)
    with pytest.raises(DatasetError, match=expected) as err:
        load_cifar10(cifar_dir)
    assert "b'data': expected a uint8 array" in _assert_single_line_naming(err, path)


def test_error_wrong_labels(cifar_dir):
    path = cifar_dir / "data_batch_4"
    batch = _batch(4)
    batch[b"labels"] = batch[b"labels"][:-1]
    _dump(batch, path)
    with pytest.raises(DatasetError, match=r"expected 20 labels .* got shape \[19\]") as err:
        load_cifar10(cifar_dir)
    _assert_single_line_naming(err, path)
    batch[b"labels"] = [12] * PER_BATCH
    _dump(batch, path)
    with pytest.raises(DatasetError, match=r"expected values in 0..9, got 12..12"):
        load_cifar10(cifar_dir)


def test_error_not_a_dict_or_missing_keys(cifar_dir):
    path = cifar_dir / "data_batch_1"
    _dump([1, 2, 3], path)
    with pytest.raises(DatasetError, match=r"expected a pickled dict with b'data' and b'labels', got list"):
        load_cifar10(cifar_dir)
    _dump({b"data": _batch(1)[b"data"]}, path)
    with pytest.raises(DatasetError, match=r"missing \[b'labels'\]") as err:
        load_cifar10(cifar_dir)
    _assert_single_line_naming(err, path)


def test_error_corrupt_meta(cifar_dir):
    path = cifar_dir / "batches.meta"
    path.write_bytes(b"\x80\x02}q")
    with pytest.raises(DatasetError) as err:
        load_cifar10(cifar_dir)
    _assert_single_line_naming(err, path)


def test_dataset_error_message_forms(tmp_path):
    assert str(DatasetError(tmp_path / "x", "bad\nthing")) == f"{tmp_path / 'x'}: bad thing"
    assert str(DatasetError("already\na message")) == "already a message"


# ---------------------------------------------------------------------------------------------------- dispatch


def test_load_dataset_dispatch(cifar_dir):
    train, val, info = load_dataset("digits", val_fraction=0.25, seed=1)
    ref_train, _, _ = load_digits(val_fraction=0.25, seed=1)
    assert info.name == "digits" and torch.equal(train.tensors[0], ref_train.tensors[0])
    train, val, info = load_dataset("cifar10", cifar_dir, split="train_test", limit=3)
    assert info.name == "cifar10" and (len(train), len(val)) == (3, 3)
    with pytest.raises(ValueError, match=r"name: expected one of \['digits', 'cifar10'\], got 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match=r"data_dir: expected .* got None"):
        load_dataset("cifar10")


def test_make_loaders():
    x = torch.arange(10, dtype=torch.float32).view(10, 1)
    ds = torch.utils.data.TensorDataset(x, torch.arange(10))
    train_loader, val_loader = make_loaders(ds, ds, batch_size=4, seed=5)

    def order(loader):
        return torch.cat([y for _, y in loader]).tolist()

    first = order(train_loader)
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert order(make_loaders(ds, ds, batch_size=4, seed=5)[0]) == first  # same seed, same order
    assert order(make_loaders(ds, ds, batch_size=4, seed=6)[0]) != first
    assert order(val_loader) == list(range(10))
    assert [len(y) for _, y in val_loader] == [4, 4, 2] and len(train_loader) == 3  # drop_last=False
    with pytest.raises(ValueError, match=r"batch_size: expected a positive int, got 0"):
        make_loaders(ds, ds, batch_size=0, seed=0)
