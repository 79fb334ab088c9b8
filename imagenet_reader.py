"""ImageNet-format folder dataset: DATA_DIR/{train,val}_list.txt of `path label` lines."""

import math
import os
import warnings

import numpy as np
from PIL import Image

from suite.errors import DataError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
LIST_FILES = {"train": "train_list.txt", "val": "val_list.txt"}
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10
VAL_CROP_FRACTION = 0.875
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def random_resized_crop_box(width, height, rng):
    """Pick a (left, top, right, bottom) box covering 8-100% of the area with aspect 3/4-4/3."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(CROP_ATTEMPTS):
        target_area = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * ratio)))
        h = int(round(math.sqrt(target_area / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    # Fallback: the largest central crop whose aspect ratio is within range.
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif ratio > CROP_RATIO[1]:
        w, h = int(round(height * CROP_RATIO[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_transform(image, size, rng):
    """Random-resized-crop to size x size plus a random horizontal flip."""
    box = random_resized_crop_box(image.width, image.height, rng)
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def val_transform(image, size):
    """Resize the shorter side to round(size / 0.875), then center-crop size x size."""
    short = int(round(size / VAL_CROP_FRACTION))
    scale = short / min(image.width, image.height)
    new_w = max(short, int(round(image.width * scale)))
    new_h = max(short, int(round(image.height * scale)))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_normalized_chw(image):
    """PIL RGB image -> float32 CHW normalised with the ImageNet mean/std."""
    array = (np.asarray(image, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(array.transpose(2, 0, 1))


class ImageNetDataset:
    """Samples listed in DATA_DIR/{mode}_list.txt, decoded and transformed one at a time."""

    def __init__(self, data_dir, mode="train", image_size=224, skip_bad_samples=False,
                 max_samples=None):
        if mode not in LIST_FILES:
            raise DataError("unknown ImageNet mode %r: use 'train' or 'val'" % (mode,))
        self.data_dir = data_dir
        self.mode = mode
        self.image_size = image_size
        self.skip_bad_samples = skip_bad_samples
        self.list_path = os.path.join(data_dir, LIST_FILES[mode])
        self.skipped = 0
        self.samples = self._read_list(max_samples)
        if not self.samples:
            raise DataError("%s lists no usable samples; add lines 'relative/path.jpeg label'"
                            % self.list_path)
        self.num_classes = max(label for _, label, _ in self.samples) + 1

    def _read_list(self, max_samples):
        """Parse and check the list file into (image path, label, line number) tuples."""
        if not os.path.isfile(self.list_path):
            raise DataError("%s not found: an ImageNet-format folder needs %s with lines "
                            "'relative/path.jpeg label'; pass the right --data_dir"
                            % (self.list_path, LIST_FILES[self.mode]))
        samples, problems = [], []
        with open(self.list_path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if max_samples is not None and len(samples) >= max_samples:
                    break
                if not line.strip():
                    continue
                try:
                    samples.append(self._parse_line(line, line_no))
                except DataError as exc:
                    if not self.skip_bad_samples:
                        raise
                    problems.append(str(exc))
        if problems:
            self.skipped = len(problems)
            warnings.warn("skipped %d bad lines of %s; first: %s"
                          % (len(problems), self.list_path, problems[0]))
        return samples

    def _parse_line(self, line, line_no):
        where = "%s:%d" % (self.list_path, line_no)
        fields = line.split()
        if len(fields) != 2:
            raise DataError("%s: expected 'relative/path.jpeg label', got %r; fix or remove the "
                            "line" % (where, line.rstrip("\n")))
        try:
            label = int(fields[1])
        except ValueError:
            raise DataError("%s: label %r is not an integer; fix or remove the line"
                            % (where, fields[1])) from None
        if label < 0:
            raise DataError("%s: label %d is negative; labels must be 0..num_classes-1"
                            % (where, label))
        path = os.path.join(self.data_dir, fields[0])
        if not os.path.isfile(path):
            raise DataError("%s: image %s not found; add the file or remove the line"
                            % (where, path))
        return path, label, line_no

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.read(index)

    def _decode(self, index):
        path, label, line_no = self.samples[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB"), label
        except IMAGE_ERRORS as exc:
            raise DataError("%s:%d: image %s is corrupt or unreadable (%s); replace it, remove "
                            "the line, or use skip_bad_samples"
                            % (self.list_path, line_no, path, exc)) from exc

    def read(self, index, rng=None):
        """Return (float32 CHW image, int64 label); rng (default: seeded by index) drives crops.

        With skip_bad_samples an unreadable image is replaced by the next readable sample and label.
        """
        for offset in range(len(self.samples)):
            try:
                image, label = self._decode((index + offset) % len(self.samples))
                break
            except DataError as exc:
                if not self.skip_bad_samples:
                    raise
                self.skipped += 1
                warnings.warn("skipping bad sample (%d skipped so far): %s" % (self.skipped, exc))
        else:
            raise DataError("%s: no listed image is readable" % self.list_path)
        if self.mode == "train":
            image = train_transform(image, self.image_size,
                                    rng if rng is not None else np.random.default_rng(index))
        else:
            image = val_transform(image, self.image_size)
        return to_normalized_chw(image), np.int64(label)
