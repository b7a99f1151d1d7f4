"""Data sets (in-memory uint8 tensors), the ``Loader`` interface and ``make_loaders``."""

from latentgeo.config import check
from latentgeo.data import corruptions as c
from latentgeo.data.datasets import (
    DATASETS,
    DataBundle,
    DatasetUnavailable,
    Split,
    _bundle,
    load_digits,
    load_synthetic,
)
from latentgeo.data.loaders import EVAL_SPLITS, LOADERS, Loader, Loaders, make_loader, make_loaders
from latentgeo.data.tensor_loader import TensorLoader

__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetUnavailable",
    "EVAL_SPLITS",
    "LOADERS",
    "Loader",
    "Loaders",
    "Split",
    "TensorLoader",
    "load_dataset",
    "load_digits",
    "load_synthetic",
    "make_loader",
    "make_loaders",
]


def load_dataset(cfg) -> DataBundle:
    """Load ``cfg`` (a DatasetConfig) into memory and apply its subsets and corruptions.

    Order: class selection -> stratified train subset -> validation split -> label noise ->
    pixel shuffle -> resize; normalisation statistics come from the final train split.
    Pixel shuffle permutes the stored images, so augmentation (if on) acts on shuffled
    images (HP permutes after augmentation).
    """
    data = DATASETS[cfg.name](cfg)
    bad = [c for c in cfg.classes or [] if not 0 <= c < data.num_classes]
    check(not bad, "dataset.classes", cfg.classes,
          f"distinct class indices within 0..{data.num_classes - 1} of {cfg.name}")
    check(cfg.classes is None or len(set(cfg.classes)) == len(cfg.classes), "dataset.classes",
          cfg.classes, "distinct class indices")
    if not _changes_data(cfg):
        return data
    train, test, num_classes, val = data.train, data.test, data.num_classes, None
    classes = list(cfg.classes) if cfg.classes is not None else None
    if cfg.num_classes_subsample is not None:
        classes = c.subsample_classes(num_classes, cfg.num_classes_subsample, cfg.seed)
    if classes is not None:
        train = Split(*c.select_classes(train.x, train.y, classes))
        test = Split(*c.select_classes(test.x, test.y, classes))
        num_classes = len(classes)
    if cfg.train_subset.size_per_class is not None:
        index = c.stratified_subset_indices(train.y, num_classes,
                                            cfg.train_subset.size_per_class,
                                            cfg.train_subset.index)
        train = Split(train.x[index], train.y[index])
    if cfg.val_split is not None:
        keep, held = c.train_val_split_indices(train.y, cfg.val_split, cfg.stratified, cfg.seed)
        val = Split(train.x[held], train.y[held])
        train = Split(train.x[keep], train.y[keep])
    if cfg.label_noise > 0:
        noisy, _ = c.label_noise(train.y, cfg.label_noise, num_classes, cfg.seed)
        train = Split(train.x, noisy)
    if cfg.pixel_shuffle:
        train = Split(c.pixel_shuffle(train.x, cfg.seed)[0], train.y)
    resize = (c.resize_images, cfg.resize) if cfg.resize else (
        (c.resize_pad_images, cfg.resize_pad) if cfg.resize_pad else None)
    if resize is not None and tuple(train.x.shape[2:]) != (resize[1], resize[1]):
        fn, size = resize
        train, test = Split(fn(train.x, size), train.y), Split(fn(test.x, size), test.y)
        val = Split(fn(val.x, size), val.y) if val is not None else None
    bundle = _bundle(data.name, train, test, num_classes)
    bundle.val = val
    return bundle


def _changes_data(cfg) -> bool:
    return bool(cfg.label_noise or cfg.pixel_shuffle or cfg.classes is not None
                or cfg.num_classes_subsample is not None
                or cfg.train_subset.size_per_class is not None or cfg.val_split is not None
                or cfg.resize or cfg.resize_pad)
