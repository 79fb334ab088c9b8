"""Tests for suite.data (dataset registry, batching) and imagenet_reader."""

import gzip
import io
import os
import pickle
import tarfile
import warnings

import numpy as np
import pytest
from PIL import Image

from imagenet_reader import ImageNetDataset
from suite.data import DATASETS, ArrayDataset, batches, load_dataset, num_batches
from suite.errors import DataError

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
RED, BLUE = (220, 30, 30), (30, 30, 220)


def write_idx(path, magic, array):
    header = np.array([magic] + list(array.shape), ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("t10k", 3)):
        write_idx(tmp_path / ("%s-images-idx3-ubyte.gz" % split), 2051,
                  rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / ("%s-labels-idx1-ubyte.gz" % split), 2049, np.arange(count) + 4)
    return tmp_path


def test_mnist_idx_files_load_and_normalise(mnist_dir):
    ds = load_dataset("mnist", "train", data_dir=str(mnist_dir))
    assert len(ds) == 5 and ds.num_classes == 10
    image, label = ds[2]
    assert image.shape == (1, 28, 28) and image.dtype == np.float32
    assert label == 6 and label.dtype == np.int64
    with gzip.open(mnist_dir / "train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(5, 28, 28)
    np.testing.assert_allclose(image[0], (raw[2] / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert image.min() >= -1.0 and image.max() <= 1.0

    test = load_dataset("mnist", "val", data_dir=str(mnist_dir))
    assert len(test) == 3 and list(test.labels) == [4, 5, 6]
    assert load_dataset("mnist", "train", data_dir=str(mnist_dir), subset=2).images.shape[0] == 2
    resized = load_dataset("mnist", "train", data_dir=str(mnist_dir), image_size=32)
    assert resized[0][0].shape == (1, 32, 32)


def test_mnist_missing_files_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="not found in %s" % tmp_path) as err:
        load_dataset("mnist", "train", data_dir=str(tmp_path))
    assert "train-images-idx3-ubyte.gz" in str(err.value) and "\n" not in str(err.value)


def test_mnist_truncated_or_bad_files_name_the_file(mnist_dir):
    images = mnist_dir / "train-images-idx3-ubyte.gz"
    with gzip.open(images) as f:
        raw = f.read()
    with gzip.open(images, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is truncated"):
        load_dataset("mnist", "train", data_dir=str(mnist_dir))

    gz_bytes = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (mnist_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(gz_bytes[:len(gz_bytes) // 2])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", "test", data_dir=str(mnist_dir))

    write_idx(images, 2049, np.zeros((5, 28, 28)))
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        load_dataset("mnist", "train", data_dir=str(mnist_dir))


def test_unknown_dataset_and_missing_dirs():
    with pytest.raises(DataError, match="cifar10, fashion_mnist, imagenet, mnist"):
        load_dataset("svhn", "train")
    with pytest.raises(DataError, match="data_dir"):
        load_dataset("imagenet", "train")
    with pytest.raises(DataError, match="/no/such/folder"):
        load_dataset("mnist", "train", data_dir="/no/such/folder")
    assert DATASETS["cifar10"].in_channels == 3 and DATASETS["mnist"].image_size == 28


def cifar_rows(count, base):
    rows = np.zeros((count, 3072), np.uint8)
    for i in range(count):
        rows[i, :1024] = base + i          # R plane
        rows[i, 1024:2048] = base + 100 + i  # G plane
        rows[i, 2048:] = base + 200 + i    # B plane
    return rows


def test_cifar10_archive_channel_order_and_labels(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        names = ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]
        for k, name in enumerate(names):
            payload = pickle.dumps({b"data": cifar_rows(2, 10 * k), b"labels": [k, 9 - k]})
            info = tarfile.TarInfo("cifar-10-batches-py/" + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    train = load_dataset("cifar10", "train", data_dir=str(tmp_path))
    assert len(train) == 10 and train.images.shape == (10, 3, 32, 32)
    assert list(train.labels) == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
    assert list(train.images[3, :, 5, 7]) == [11, 111, 211]
    image, label = train[3]
    assert label == 8 and image.shape == (3, 32, 32) and image.dtype == np.float32
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    expected = (np.array([11, 111, 211]) / 255.0 - mean) / std
    np.testing.assert_allclose(image[:, 0, 0], expected, rtol=1e-5)
    test = load_dataset("cifar10", "test", data_dir=str(tmp_path))
    assert list(test.labels) == [5, 4] and list(test.images[1, :, 0, 0]) == [51, 151, 251]
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz is corrupt or truncated"):
        load_dataset("cifar10", "test", data_dir=str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="archive not found: .*empty/cifar-10-python.tar.gz"):
        load_dataset("cifar10", "train", data_dir=str(tmp_path / "empty"))


def write_jpeg(path, size, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")


@pytest.fixture
def imagenet_dir(tmp_path):
    """Three red (label 0) and three blue (label 1) JPEGs; four train samples, two val."""
    specs = [("a0", (40, 30), RED, 0), ("a1", (30, 50), RED, 0), ("a2", (40, 30), RED, 0),
             ("b0", (30, 50), BLUE, 1), ("b1", (40, 30), BLUE, 1), ("b2", (30, 50), BLUE, 1)]
    for name, size, color, _ in specs:
        write_jpeg(tmp_path / "img" / (name + ".jpeg"), size, color)
    lines = ["img/%s.jpeg %d" % (name, label) for name, _, _, label in specs]
    (tmp_path / "train_list.txt").write_text("\n".join(lines[:2] + lines[3:5]) + "\n")
    (tmp_path / "val_list.txt").write_text("\n".join([lines[2], lines[5]]) + "\n")
    return tmp_path


def assert_color_matches_label(image, label):
    red, blue = image[0].mean(), image[2].mean()
    assert (red > blue) if label == 0 else (blue > red)


@pytest.mark.parametrize("mode", ["train", "val"])
def test_imagenet_transforms_shapes_and_labels(imagenet_dir, mode):
    ds = ImageNetDataset(str(imagenet_dir), mode, image_size=32)
    assert ds.num_classes == 2 and ds.skipped == 0
    assert len(ds) == (4 if mode == "train" else 2)
    for i in range(len(ds)):
        image, label = ds.read(i, np.random.default_rng(i))
        assert image.shape == (3, 32, 32) and image.dtype == np.float32
        assert label.dtype == np.int64 and label == ds.samples[i][1]
        assert_color_matches_label(image, label)
    image, _ = ds[0]
    np.testing.assert_array_equal(image, ds[0][0])


def test_imagenet_through_registry(imagenet_dir):
    ds = load_dataset("imagenet", "test", data_dir=str(imagenet_dir), image_size=24, subset=1)
    assert ds.mode == "val" and len(ds) == 1 and ds[0][0].shape == (3, 24, 24)


@pytest.mark.parametrize("line, message", [
    ("img/missing.jpeg 1", r"val_list.txt:3: image .*missing.jpeg not found"),
    ("img/a0.jpeg", r"val_list.txt:3: expected 'relative/path.jpeg label'"),
    ("img/a0.jpeg one", r"val_list.txt:3: label 'one' is not an integer"),
    ("img/a0.jpeg -2", r"val_list.txt:3: label -2 is negative"),
])
def test_imagenet_bad_list_lines(imagenet_dir, line, message):
    with open(imagenet_dir / "val_list.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=message):
        ImageNetDataset(str(imagenet_dir), "val", image_size=32)


def test_imagenet_missing_list_and_corrupt_image(imagenet_dir):
    with pytest.raises(DataError, match="train_list.txt not found"):
        ImageNetDataset(str(imagenet_dir / "img"), "train")
    (imagenet_dir / "img" / "b2.jpeg").write_bytes(b"this is not a jpeg" * 10)
    ds = ImageNetDataset(str(imagenet_dir), "val", image_size=32)
    with pytest.raises(DataError, match=r"val_list.txt:2: image .*b2.jpeg is corrupt"):
        ds.read(1)


def test_imagenet_skip_bad_samples(imagenet_dir):
    (imagenet_dir / "img" / "b1.jpeg").write_bytes(b"\xff\xd8\xff garbage")
    with open(imagenet_dir / "train_list.txt", "a") as f:
        f.write("img/missing.jpeg 1\nimg/a0.jpeg x\nimg/b0.jpeg 1\n")
    with pytest.warns(UserWarning, match="skipped 2 bad lines"):
        ds = ImageNetDataset(str(imagenet_dir), "train", image_size=16, skip_bad_samples=True)
    assert ds.skipped == 2 and len(ds) == 5
    assert [label for _, label, _ in ds.samples] == [0, 0, 1, 1, 1]
    with pytest.warns(UserWarning, match="b1.jpeg is corrupt"):
        image, label = ds.read(3)  # b1 is corrupt: the next sample (b0, label 1) replaces it
    assert ds.skipped == 3 and label == 1
    assert_color_matches_label(image, label)


def test_fashion_mnist_subset():
    if not os.path.isdir(FASHION_DIR):
        pytest.skip("Fashion-MNIST is not installed in %s" % FASHION_DIR)
    ds = load_dataset("fashion_mnist", "train", subset=100)
    assert len(ds) == 100 and ds.num_classes == 10
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == np.float32
    assert ds.labels.min() >= 0 and ds.labels.max() <= 9 and len(set(ds.labels)) > 5
    assert len(load_dataset("fashion_mnist", "test", subset=100)) == 100


def indexed_dataset(count, size=8):
    """Dataset whose label is the sample index and whose pixels encode it too."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (count, 1, size, size)).astype(np.uint8)
    images[:, 0, 0, 0] = np.arange(count)
    return ArrayDataset(images, np.arange(count, dtype=np.int64), (0.5,), (0.5,), count)


def collect(ds, **kwargs):
    return [(x.copy(), y.copy()) for x, y in batches(ds, **kwargs)]


def labels_of(result):
    return np.concatenate([y[:, 0] for _, y in result])


def test_batches_are_deterministic_and_shaped():
    ds = indexed_dataset(40)
    first = collect(ds, batch_size=4, shuffle=True, seed=3, epoch=1)
    again = collect(ds, batch_size=4, shuffle=True, seed=3, epoch=1)
    assert len(first) == num_batches(ds, 4) == 10
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    x, y = first[0]
    assert x.shape == (4, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (4, 1) and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0, 0, 0], (y[:, 0] / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert sorted(labels_of(first)) == list(range(40))
    other_epoch = labels_of(collect(ds, batch_size=4, shuffle=True, seed=3, epoch=2))
    assert not np.array_equal(labels_of(first), other_epoch)
    ordered = labels_of(collect(ds, batch_size=4, shuffle=False))
    np.testing.assert_array_equal(ordered, np.arange(40))


def test_batches_shard_across_ranks():
    ds = indexed_dataset(40)
    single = labels_of(collect(ds, batch_size=4, shuffle=True, seed=5, epoch=0))
    shards = [labels_of(collect(ds, batch_size=4, shuffle=True, seed=5, rank=r, nranks=2))
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 20 and num_batches(ds, 4, nranks=2) == 5
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(single)
    np.testing.assert_array_equal(shards[0][:4], single[:4])
    np.testing.assert_array_equal(shards[1][:4], single[4:8])

    odd = indexed_dataset(42)
    assert num_batches(odd, 4, nranks=2) == 5
    for rank in range(2):
        assert len(collect(odd, batch_size=4, shuffle=True, rank=rank, nranks=2)) == 5
    kept = [collect(odd, batch_size=4, shuffle=True, rank=r, nranks=2, drop_last=False)
            for r in range(2)]
    assert len(kept[0]) == len(kept[1]) == num_batches(odd, 4, nranks=2, drop_last=False) == 6
    assert set(labels_of(kept[0])) | set(labels_of(kept[1])) == set(range(42))
    with pytest.raises(ValueError, match="rank"):
        next(batches(odd, 4, True, rank=2, nranks=2))


def test_augment_is_seeded_crop_and_flip():
    ds = indexed_dataset(16)
    result = collect(ds, batch_size=4, shuffle=True, seed=1, epoch=0, augment=True)
    again = collect(ds, batch_size=4, shuffle=True, seed=1, epoch=0, augment=True)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(result, again))
    padded = np.pad(ds.normalize(ds.images), ((0, 0), (0, 0), (4, 4), (4, 4)),
                    constant_values=-1.0)
    changed = 0
    for x, y in result:
        for image, index in zip(x, y[:, 0]):
            candidates = [crop[..., ::-1] if flip else crop
                          for dy in range(9) for dx in range(9) for flip in (False, True)
                          for crop in [padded[index, :, dy:dy + 8, dx:dx + 8]]]
            assert any(np.array_equal(image, c) for c in candidates)
            changed += not np.array_equal(image, ds[index][0])
    assert changed > 8
    other = collect(ds, batch_size=4, shuffle=True, seed=1, epoch=1, augment=True)
    by_label = {int(y[i, 0]): x[i] for x, y in other for i in range(len(y))}
    assert any(not np.array_equal(x[i], by_label[int(y[i, 0])])
               for x, y in result for i in range(len(y)))
    sharded = collect(ds, batch_size=4, shuffle=True, seed=1, epoch=0, augment=True,
                      rank=1, nranks=2)
    np.testing.assert_array_equal(sharded[0][0], result[1][0])


def test_imagenet_workers_match_serial(imagenet_dir):
    ds = ImageNetDataset(str(imagenet_dir), "train", image_size=16)
    serial = collect(ds, batch_size=2, shuffle=True, seed=2, epoch=1)
    parallel = collect(ds, batch_size=2, shuffle=True, seed=2, epoch=1, num_workers=2)
    assert len(serial) == len(parallel) == 2
    for (x1, y1), (x2, y2) in zip(serial, parallel):
        assert x1.shape == (2, 3, 16, 16) and y1.shape == (2, 1) and y1.dtype == np.int64
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    next_epoch = collect(ds, batch_size=2, shuffle=True, seed=2, epoch=2, num_workers=2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(serial, next_epoch))


def test_imagenet_workers_count_skipped_samples(imagenet_dir):
    (imagenet_dir / "img" / "a1.jpeg").write_bytes(b"garbage")
    ds = ImageNetDataset(str(imagenet_dir), "train", image_size=16, skip_bad_samples=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = collect(ds, batch_size=4, shuffle=False, num_workers=2)
    assert ds.skipped == 1
    x, y = result[0]
    assert list(y[:, 0]) == [0, 1, 1, 1]
    for image, label in zip(x, y[:, 0]):
        assert_color_matches_label(image, label)
