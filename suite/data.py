"""Dataset registry and deterministic NumPy batching for static-graph training.

Normalisation: MNIST-family images use (x/255 - 0.5) / 0.5 (fixed, so the test
split never needs the train set); CIFAR-10 uses the standard per-channel train
set mean/std; ImageNet uses the usual ImageNet mean/std (see imagenet_reader).

Sharding: the epoch permutation (np.random.default_rng([seed, epoch])) is cut
into batch-sized chunks and rank r takes chunks r, r + nranks, r + 2*nranks, ...
so every rank gets num_batches(...) batches and step k of all ranks together
covers one contiguous block of nranks * batch_size permuted samples. With
drop_last=False the leftover samples form one last, evenly split step, padded
with samples from the start of the permutation so that all ranks stay in step.
"""

import collections
import gzip
import math
import multiprocessing
import os
import signal
import sys
import tarfile
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from PIL import Image

from suite.artefacts.safe_pickle import unpickle
from suite.errors import CheckpointError, DataError

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_BATCHES = {
    "train": ["data_batch_%d" % i for i in range(1, 6)],
    "test": ["test_batch"],
}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
AUGMENT_PADDING = 4
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered dataset and the function that loads it."""

    num_classes: int
    in_channels: int
    image_size: int
    data_dir: Optional[str]
    loader: Callable


class ArrayDataset:
    """In-memory dataset: raw uint8 `images` [N,C,H,W] and int64 `labels` [N]."""

    def __init__(self, images, labels, mean, std, num_classes):
        self.images = images
        self.labels = labels
        self.mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        self.num_classes = num_classes

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.normalize(self.images[index][None])[0], self.labels[index]

    def normalize(self, images):
        """Map a uint8 batch [B,C,H,W] to normalised float32."""
        return (images.astype(np.float32) / 255.0 - self.mean) / self.std


def _split(split):
    if split in ("train", "test"):
        return split
    if split == "val":
        return "test"
    raise DataError("unknown split %r: use 'train', 'test' or 'val'" % (split,))


def _resize_array(images, size):
    """Bilinear-resize uint8 [N,C,H,W] images to [N,C,size,size] with Pillow."""
    if images.shape[2] == size and images.shape[3] == size:
        return images
    out = np.empty(images.shape[:2] + (size, size), np.uint8)
    for i, image in enumerate(images):
        hwc = image.transpose(1, 2, 0)
        pil = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
        resized = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
        out[i] = resized.reshape(size, size, -1).transpose(2, 0, 1)
    return out


def _read_idx(path, magic, dims):
    """Read an idx .gz file with the given magic number and number of size fields."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError("%s is corrupt or truncated (%s); download it again" % (path, exc)) from exc
    header = 4 * (1 + dims)
    if len(raw) < header:
        raise DataError("%s is truncated: %d bytes, shorter than its idx header; download it again"
                        % (path, len(raw)))
    fields = np.frombuffer(raw[:header], ">u4").astype(np.int64)
    if fields[0] != magic:
        raise DataError("%s has magic number %d, expected %d; it is not an idx file of this kind"
                        % (path, fields[0], magic))
    shape = tuple(int(v) for v in fields[1:])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError("%s is truncated or corrupt: %d bytes, expected %d; download it again"
                        % (path, len(raw), expected))
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _load_mnist_family(title, data_dir, split, image_size, subset):
    names = MNIST_FILES[split]
    missing = [n for n in names if not os.path.isfile(os.path.join(data_dir, n))]
    if missing:
        raise DataError("%s files not found in %s: expected %s (missing %s); download them from "
                        "the %s site into that folder or pass --data_dir"
                        % (title, data_dir, ", ".join(names), ", ".join(missing), title))
    image_path, label_path = (os.path.join(data_dir, n) for n in names)
    images = _read_idx(image_path, IDX_IMAGES_MAGIC, 3)
    labels = _read_idx(label_path, IDX_LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise DataError("%s has %d images but %s has %d labels; download both files again"
                        % (image_path, len(images), label_path, len(labels)))
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    images = _resize_array(images[:, None], image_size)
    return ArrayDataset(images, labels.astype(np.int64), (0.5,), (0.5,), 10)


def _load_mnist(data_dir, split, image_size, subset):
    return _load_mnist_family("MNIST", data_dir, split, image_size, subset)


def _load_fashion_mnist(data_dir, split, image_size, subset):
    return _load_mnist_family("Fashion-MNIST", data_dir, split, image_size, subset)


def _load_cifar10(data_dir, split, image_size, subset):
    path = os.path.join(data_dir, CIFAR_ARCHIVE)
    if not os.path.isfile(path):
        raise DataError("CIFAR-10 archive not found: %s; download %s from the CIFAR site into %s "
                        "or pass --data_dir" % (path, CIFAR_ARCHIVE, data_dir))
    wanted = CIFAR_BATCHES[split]
    found = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if name in wanted and member.isfile():
                    found[name] = unpickle(tar.extractfile(member), member.name, "a CIFAR-10 batch",
                                           encoding="bytes")
    except (OSError, EOFError, tarfile.TarError, CheckpointError) as exc:
        raise DataError("%s is corrupt or truncated (%s); download it again" % (path, exc)) from exc
    missing = [n for n in wanted if n not in found]
    if missing:
        raise DataError("%s lacks %s; download the Python version of CIFAR-10 again"
                        % (path, ", ".join(missing)))
    try:
        images = np.concatenate([np.asarray(found[n][b"data"], np.uint8) for n in wanted])
        labels = np.concatenate([np.asarray(found[n][b"labels"], np.int64) for n in wanted])
        images = images.reshape(-1, 3, 32, 32)
    except (KeyError, ValueError) as exc:
        raise DataError("%s has a batch without valid b'data' [N,3072] / b'labels' (%s); "
                        "download it again" % (path, exc)) from exc
    if len(images) != len(labels):
        raise DataError("%s: %d images but %d labels; download it again"
                        % (path, len(images), len(labels)))
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    return ArrayDataset(_resize_array(images, image_size), labels, CIFAR_MEAN, CIFAR_STD, 10)


def _load_imagenet(data_dir, split, image_size, subset, skip_bad_samples=False):
    import imagenet_reader

    mode = "train" if split == "train" else "val"
    return imagenet_reader.ImageNetDataset(data_dir, mode, image_size, skip_bad_samples=skip_bad_samples, max_samples=subset)


DATASETS = {
    "fashion_mnist": DatasetInfo(10, 1, 28, "/usr/share/datasets/fashion-mnist",
                                 _load_fashion_mnist),
    "mnist": DatasetInfo(10, 1, 28, "~/.cache/paddle/dataset/mnist", _load_mnist),
    "cifar10": DatasetInfo(10, 3, 32, "~/.cache/paddle/dataset/cifar", _load_cifar10),
    "imagenet": DatasetInfo(1000, 3, 224, None, _load_imagenet),
}


def load_dataset(name, split, data_dir=None, image_size=None, subset=None, skip_bad_samples=False):
    """Load split 'train' or 'test' ('val' is an alias) of a registered dataset.

    skip_bad_samples (ImageNet folders only): skip malformed lines, missing and corrupt images with a
    warning and a count instead of stopping; the array datasets check their files whole.
    """
    if name not in DATASETS:
        raise DataError("unknown dataset %r: choose one of %s"
                        % (name, ", ".join(sorted(DATASETS))))
    info = DATASETS[name]
    data_dir = data_dir or info.data_dir
    if data_dir is None:
        raise DataError("dataset %r has no default folder: pass --data_dir pointing at a folder "
                        "with train_list.txt and val_list.txt" % name)
    data_dir = os.path.expanduser(data_dir)
    if not os.path.isdir(data_dir):
        raise DataError("data folder %s for dataset %r does not exist; create it with the data "
                        "files or pass --data_dir" % (data_dir, name))
    if subset is not None and subset < 1:
        raise DataError("subset must be a positive number of samples, got %r" % (subset,))
    options = {"skip_bad_samples": True} if skip_bad_samples and name == "imagenet" else {}
    return info.loader(data_dir, _split(split), image_size or info.image_size, subset, **options)


def held_out(name, data_dir=None, image_size=None, count=1000):
    """Validation samples to tune on without touching the test set: the last `count` training samples of an
    array dataset (runs with --train_subset below its size never train on them), else the val split's first."""
    train = load_dataset(name, "train", data_dir, image_size)
    if not isinstance(train, ArrayDataset):
        return load_dataset(name, "val", data_dir, image_size, count)
    if not 1 <= count <= len(train):
        raise DataError(f"a held-out set of {count} samples needs 1 to {len(train)} ({name} has {len(train)} training samples)")
    tail = slice(len(train) - count, len(train))
    return ArrayDataset(train.images[tail], train.labels[tail], train.mean.reshape(-1), train.std.reshape(-1), train.num_classes)


def num_batches(dataset, batch_size, nranks=1, drop_last=True):
    """Number of batches each rank gets from batches(...) with these arguments."""
    per_step = batch_size * nranks
    if drop_last:
        return len(dataset) // per_step
    return math.ceil(len(dataset) / per_step)


def _rank_chunks(size, batch_size, shuffle, seed, epoch, rank, nranks, drop_last):
    """Index arrays of this rank's batches; see the module docstring for the rule."""
    order = np.random.default_rng([seed, epoch]).permutation(size) if shuffle else np.arange(size)
    full_steps = size // (batch_size * nranks)
    chunks = [order[k * batch_size:(k + 1) * batch_size]
              for k in range(rank, full_steps * nranks, nranks)]
    tail = order[full_steps * nranks * batch_size:]
    if not drop_last and len(tail):
        # Last step: split the tail evenly, padding from the start of the order so
        # that every rank gets one more batch of the same size.
        share = math.ceil(len(tail) / nranks)
        padded = np.concatenate([tail, np.resize(order, share * nranks - len(tail))])
        chunks.append(padded[rank * share:(rank + 1) * share])
    return chunks


def _augment_params(size, seed, epoch):
    """Per-sample crop offsets [N,2] and flip flags [N] for one epoch."""
    rng = np.random.default_rng([seed, epoch, 1])
    offsets = rng.integers(0, 2 * AUGMENT_PADDING + 1, size=(size, 2))
    flips = rng.random(size) < 0.5
    return offsets, flips


def _crop_and_flip(images, offsets, flips):
    """Random crop with zero padding plus horizontal flip of a uint8 batch [B,C,H,W]."""
    b, c, h, w = images.shape
    p = AUGMENT_PADDING
    padded = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
    rows = offsets[:, 0, None] + np.arange(h)
    cols = offsets[:, 1, None] + np.arange(w)
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    return padded[np.arange(b)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def _sample_rng(seed, epoch, index):
    return np.random.default_rng([seed, epoch, int(index)])


_worker_dataset = None


def _init_worker(dataset):
    """Pool initializer: keep the dataset; leave Ctrl-C to the parent; die quietly on SIGTERM."""
    global _worker_dataset
    _worker_dataset = dataset
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _read_in_worker(task):
    """Decode one sample in a pool worker; also return how many bad samples were skipped."""
    index, seed, epoch = task
    before = _worker_dataset.skipped
    image, label = _worker_dataset.read(index, _sample_rng(seed, epoch, index))
    return image, label, _worker_dataset.skipped - before


def _stack(samples):
    images = np.stack([s[0] for s in samples]).astype(np.float32, copy=False)
    labels = np.asarray([s[1] for s in samples], np.int64).reshape(-1, 1)
    return images, labels


def _finish(dataset, results):
    """Stack worker results into a batch and add their skip counts to the parent's dataset."""
    dataset.skipped += sum(r[2] for r in results)
    return _stack(results)


def _sample_batches(dataset, chunks, seed, epoch, num_workers):
    """Batches of a per-sample dataset (one with read(index, rng)), optionally via a pool."""
    if num_workers <= 0:
        for chunk in chunks:
            yield _stack([dataset.read(i, _sample_rng(seed, epoch, i)) for i in chunk])
        return
    # fork avoids re-importing the training script (and Paddle) in every worker.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    pending = collections.deque()
    with context.Pool(num_workers, _init_worker, (dataset,)) as pool:
        for chunk in chunks:
            tasks = [(int(i), seed, epoch) for i in chunk]
            pending.append(pool.map_async(_read_in_worker, tasks))
            if len(pending) >= 2 * num_workers:
                yield _finish(dataset, pending.popleft().get())
        while pending:
            yield _finish(dataset, pending.popleft().get())


def batches(dataset, batch_size, shuffle, seed=0, epoch=0, rank=0, nranks=1, drop_last=True,
            num_workers=0, augment=False):
    """Yield this rank's (images float32 [B,C,H,W], labels int64 [B,1]) for one epoch.

    `augment` (pad-4 random crop + flip) applies to array datasets; ImageNet train mode
    always augments. num_workers > 0 decodes per-sample datasets in a process pool.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1, got %r" % (batch_size,))
    if not 0 <= rank < nranks:
        raise ValueError("rank must be in [0, nranks), got rank=%r nranks=%r" % (rank, nranks))
    chunks = _rank_chunks(len(dataset), batch_size, shuffle, seed, epoch, rank, nranks, drop_last)
    if not isinstance(dataset, ArrayDataset):
        yield from _sample_batches(dataset, chunks, seed, epoch, num_workers)
        return
    if augment:
        offsets, flips = _augment_params(len(dataset), seed, epoch)
    for chunk in chunks:
        images = dataset.images[chunk]
        if augment:
            images = _crop_and_flip(images, offsets[chunk], flips[chunk])
        yield dataset.normalize(images), dataset.labels[chunk].reshape(-1, 1)
