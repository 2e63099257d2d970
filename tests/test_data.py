"""Data loaders on small files written here in each real format; subset, split, cache and error paths."""

from __future__ import annotations

import gzip
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mixnas.errors import DataError
from mixnas.data.spec import DataSpec
from mixnas.data.readers import detect_format
from mixnas.data.split import select_subset, stratified_split
from mixnas.data.load import load_images, load_proxy_data


# --- writers of the real formats ---------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def cifar_records(images_chw: np.ndarray, *label_columns: np.ndarray) -> bytes:
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    return np.concatenate([labels, images_chw.reshape(len(images_chw), -1).astype(np.uint8)], axis=1).tobytes()


def random_images(rng: np.random.Generator, n: int, side: int, channels: int = 3) -> np.ndarray:
    return rng.integers(0, 256, size=(n, channels, side, side), dtype=np.uint8)


# --- IDX ------------------------------------------------------------------------------------------------------
def test_idx_gzip_pair(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 6, 6), dtype=np.uint8)
    labels = np.arange(30) % 3
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[:5])  # the test split is ignored
    assert detect_format(tmp_path) == "idx"
    loaded = load_images(DataSpec(str(tmp_path)))
    assert loaded.images.shape == (30, 6, 6, 1)
    np.testing.assert_array_equal(loaded.images[..., 0], images)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.class_names == ("0", "1", "2")
    data = load_proxy_data(DataSpec(str(tmp_path)))
    assert data.train_images.shape[1:] == (6, 6, 3)  # grey -> 3 channels
    assert data.num_classes == 3


def test_idx_raw_file_path_and_resize(tmp_path: Path) -> None:
    images = np.full((4, 8, 8), 200, dtype=np.uint8)
    write_idx(tmp_path / "emnist-letters-train-images-idx3-ubyte", images)
    write_idx(tmp_path / "emnist-letters-train-labels-idx1-ubyte", np.array([0, 1, 0, 1]))
    loaded = load_images(DataSpec(str(tmp_path / "emnist-letters-train-images-idx3-ubyte"), resolution=16))
    assert loaded.images.shape == (4, 16, 16, 1)
    assert np.all(loaded.images == 200)


def test_idx_corrupt_and_missing_labels(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 10, 4, 4) + b"\x00" * 7)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(10))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*corrupt IDX"):
        load_images(DataSpec(str(tmp_path)))
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="labels-idx1-ubyte.*missing"):
        load_images(DataSpec(str(tmp_path)))
    bad_gz = tmp_path / "x-train-images-idx3-ubyte.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=str(bad_gz)):
        load_images(DataSpec(str(bad_gz)))


# --- CIFAR binary ---------------------------------------------------------------------------------------------
def test_cifar10_binary_records(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    chw = random_images(rng, 12, 32)
    labels = np.arange(12) % 10
    (tmp_path / "data_batch_1.bin").write_bytes(cifar_records(chw[:7], labels[:7]))
    (tmp_path / "data_batch_2.bin").write_bytes(cifar_records(chw[7:], labels[7:]))
    (tmp_path / "test_batch.bin").write_bytes(cifar_records(chw[:2], labels[:2]))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    assert detect_format(tmp_path) == "cifar10"
    loaded = load_images(DataSpec(str(tmp_path)))
    np.testing.assert_array_equal(loaded.images, chw.transpose(0, 2, 3, 1))  # channel-planar -> HWC
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.class_names == tuple(names)


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    chw = random_images(rng, 6, 32)
    coarse = np.array([0, 0, 1, 1, 2, 2])
    fine = np.array([5, 7, 5, 99, 7, 99])
    (tmp_path / "train.bin").write_bytes(cifar_records(chw, coarse, fine))
    assert detect_format(tmp_path) == "cifar100"
    loaded = load_images(DataSpec(str(tmp_path), classes=("5", "7", "99")))
    np.testing.assert_array_equal(loaded.labels, [0, 1, 0, 2, 1, 2])
    np.testing.assert_array_equal(loaded.images, chw.transpose(0, 2, 3, 1))
    assert loaded.class_names == ("5", "7", "99")


def test_cifar_corrupt_size(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(b"\x01" * 3000)
    with pytest.raises(DataError, match=f"{path}: corrupt cifar10 file"):
        load_images(DataSpec(str(tmp_path)))


# --- downsampled ImageNet npz ---------------------------------------------------------------------------------
def test_downsampled_imagenet_npz_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    chw = random_images(rng, 20, 8)
    labels = np.arange(20) % 4 + 1  # 1-based
    np.savez(tmp_path / "train_data_batch_1.npz", data=chw[:12].reshape(12, -1), labels=labels[:12], mean=np.zeros(192))
    np.savez(tmp_path / "train_data_batch_2.npz", data=chw[12:].reshape(8, -1), labels=labels[12:])
    np.savez(tmp_path / "val_data.npz", data=chw[:3].reshape(3, -1), labels=labels[:3])
    assert detect_format(tmp_path) == "npz"
    loaded = load_images(DataSpec(str(tmp_path)))
    np.testing.assert_array_equal(loaded.labels, labels - 1)
    np.testing.assert_array_equal(loaded.images, chw.transpose(0, 2, 3, 1))
    assert loaded.class_names == ("1", "2", "3", "4")
    subset = load_images(DataSpec(str(tmp_path), classes=("2", "4"), resolution=4))
    assert subset.images.shape == (10, 4, 4, 3)
    assert sorted(set(subset.labels.tolist())) == [0, 1]


def test_npz_errors(tmp_path: Path) -> None:
    zero_based = tmp_path / "train_data_batch_1.npz"
    np.savez(zero_based, data=np.zeros((2, 12), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DataError, match=f"{zero_based}: labels are 1-based"):
        load_images(DataSpec(str(tmp_path)))
    not_npz = tmp_path / "broken.npz"
    not_npz.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{not_npz}: not a readable .npz"):
        load_images(DataSpec(str(not_npz)))


# --- image folders ---------------------------------------------------------------------------------------------
COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 60), "red": (210, 30, 20)}


def write_folder(root: Path, per_class: int = 4) -> None:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (12 + 2 * i, 10)  # not square: resize short side, centre crop
            image = Image.new("RGB", size, colour)
            if i % 2:
                image.save(root / name / f"img{i}.JPEG", quality=95)
            else:
                image.save(root / name / f"img{i}.png")
    (root / "red" / "notes.txt").write_text("not an image")


def test_image_folder_decodes_png_and_jpeg(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_folder(root)
    assert detect_format(root) == "folder"
    loaded = load_images(DataSpec(str(root), resolution=8, cache_dir=str(tmp_path / "cache"), workers=2))
    assert loaded.images.shape == (12, 8, 8, 3)
    assert loaded.class_names == ("blue", "green", "red")
    assert loaded.decoded == 12
    for label, colour in enumerate(COLOURS.values()):
        pixels = loaded.images[loaded.labels == label].reshape(-1, 3).astype(int)
        assert np.abs(pixels - np.array(colour)).max() <= 6  # JPEG is lossy; PNG is exact


def test_imagenet_layout_with_train_subfolder(tmp_path: Path) -> None:
    write_folder(tmp_path / "imagenet" / "train")
    (tmp_path / "imagenet" / "val").mkdir()
    loaded = load_images(DataSpec(str(tmp_path / "imagenet"), resolution=4, classes=2, cache_dir=str(tmp_path / "c")))
    assert len(loaded.class_names) == 2 and loaded.images.shape == (8, 4, 4, 3)


def test_folder_cache_is_reused_and_keyed(tmp_path: Path) -> None:
    root, cache = tmp_path / "images", tmp_path / "cache"
    write_folder(root)
    spec = DataSpec(str(root), resolution=8, cache_dir=str(cache))
    first = load_images(spec)
    files = sorted(cache.iterdir())
    assert [f.name.split(".", 1)[1] for f in files] == ["npy", "npy.lock"]  # no temp file left behind
    mtime = files[0].stat().st_mtime_ns
    second = load_images(spec)
    assert second.decoded == 0 and second.cache_file == first.cache_file
    assert files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.images, second.images)
    other = load_images(spec.replace(resolution=6))  # another resolution is another cache entry
    assert other.decoded == 12 and len(list(cache.glob("*.npy"))) == 2
    subset = load_images(spec.replace(images_per_class=2))
    assert subset.decoded == 6 and len(list(cache.glob("*.npy"))) == 3


def test_concurrent_loads_decode_a_folder_once(tmp_path: Path) -> None:
    # Trials start together, each in its own process; the cache lock is per open file, so threads show it too.
    from concurrent.futures import ThreadPoolExecutor

    root, cache = tmp_path / "images", tmp_path / "cache"
    write_folder(root)
    spec = DataSpec(str(root), resolution=8, cache_dir=str(cache), workers=1)
    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = list(pool.map(lambda _: load_images(spec), range(4)))
    assert sorted(x.decoded for x in loaded) == [0, 0, 0, 12]
    for x in loaded[1:]:
        np.testing.assert_array_equal(x.images, loaded[0].images)


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path) -> None:
    root, cache = tmp_path / "images", tmp_path / "cache"
    write_folder(root)
    spec = DataSpec(str(root), resolution=8, cache_dir=str(cache))
    first = load_images(spec)
    # The cache is memory-mapped: keep a copy and drop the mapping before corrupting the file in place.
    expected, cache_file = np.array(first.images), Path(first.cache_file)
    del first
    cache_file.write_bytes(b"truncated")
    again = load_images(spec)
    assert again.decoded == 12
    np.testing.assert_array_equal(expected, again.images)



def test_folder_errors_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_folder(root)
    (root / "empty_class").mkdir()
    with pytest.raises(DataError, match=f"{root / 'empty_class'}: empty class"):
        load_images(DataSpec(str(root), resolution=8, cache_dir=str(tmp_path / "c")))
    (root / "empty_class").rmdir()
    corrupt = root / "green" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError, match=f"{corrupt}: corrupt or unreadable image"):
        load_images(DataSpec(str(root), resolution=8, cache_dir=str(tmp_path / "c")))


# --- common errors --------------------------------------------------------------------------------------------
def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{missing}: no such file or folder"):
        load_images(DataSpec(str(missing)))
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match=f"{tmp_path}: cannot tell the data set's format"):
        load_images(DataSpec(str(tmp_path)))
    with pytest.raises(DataError, match="readme.txt: cannot tell the format"):
        load_images(DataSpec(str(tmp_path / "readme.txt")))
    with pytest.raises(DataError, match="format: expected one of"):
        DataSpec(str(tmp_path), format="tfrecord")


def test_spec_validation_and_from_dict() -> None:
    spec = DataSpec.from_dict({"source": "digits", "classes": ["1", "3"], "val_fraction": 0.25}, "exp.yaml: data")
    assert spec.classes == ("1", "3")
    with pytest.raises(DataError, match=r"exp.yaml: data: unknown keys \['colour'\]"):
        DataSpec.from_dict({"source": "digits", "colour": 1}, "exp.yaml: data")
    with pytest.raises(DataError, match="exp.yaml: data: .*val_fraction: expected a number in \\(0, 1\\), got 1.5"):
        DataSpec.from_dict({"source": "digits", "val_fraction": 1.5}, "exp.yaml: data")
    with pytest.raises(DataError, match="classes: expected a count in 1..10, got 11"):
        load_images(DataSpec("digits", classes=11))
    with pytest.raises(DataError, match=r"unknown classes \['x'\]"):
        load_images(DataSpec("digits", classes=("1", "x")))


# --- subset and split -----------------------------------------------------------------------------------------
def test_split_is_deterministic_disjoint_and_stratified() -> None:
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 3])
    train, val = stratified_split(labels, 0.2, seed=7)
    again = stratified_split(labels, 0.2, seed=7)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(val, again[1])
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(len(labels)))
    np.testing.assert_array_equal(np.bincount(labels[val]), [2, 4, 6, 8, 1])
    other = stratified_split(labels, 0.2, seed=8)[1]
    assert not np.array_equal(val, other)


def test_subset_choice_is_seeded() -> None:
    labels = np.repeat(np.arange(10), 50)
    names = [f"c{i}" for i in range(10)]
    a = select_subset(labels, names, classes=3, images_per_class=7, seed=1, where="t")
    b = select_subset(labels, names, classes=3, images_per_class=7, seed=1, where="t")
    np.testing.assert_array_equal(a[0], b[0])
    assert a[2] == b[2] and len(a[2]) == 3
    np.testing.assert_array_equal(np.bincount(a[1]), [7, 7, 7])
    assert np.all(np.isin(labels[a[0]], [names.index(n) for n in a[2]]))


def test_proxy_data_from_digits_is_cached_in_process() -> None:
    spec = DataSpec("digits", resolution=16, classes=4, images_per_class=40)
    data = load_proxy_data(spec)
    assert load_proxy_data(DataSpec("digits", resolution=16, classes=4, images_per_class=40)) is data
    assert data.train_images.dtype.is_floating_point is False
    assert data.train_images.shape == (128, 16, 16, 3)
    assert data.val_images.shape[0] == 32
    assert np.bincount(data.val_labels.numpy()).tolist() == [8, 8, 8, 8]
    scale, shift = data.normalizer()
    x = data.train_images.permute(0, 3, 1, 2).float() * scale + shift
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05  # "dataset" normalisation


def test_synthetic_is_seeded() -> None:
    a = load_images(DataSpec("synthetic", classes=3, images_per_class=10, resolution=8, seed=5))
    b = load_images(DataSpec("synthetic", classes=3, images_per_class=10, resolution=8, seed=5))
    c = load_images(DataSpec("synthetic", classes=3, images_per_class=10, resolution=8, seed=6))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (30, 8, 8, 3)


def test_cache_write_is_atomic_no_temp_files(tmp_path: Path) -> None:
    root, cache = tmp_path / "images", tmp_path / "cache"
    write_folder(root, per_class=2)
    old = os.umask(0o022)
    try:
        load_images(DataSpec(str(root), resolution=4, cache_dir=str(cache)))
    finally:
        os.umask(old)
    assert not [n for n in os.listdir(cache) if n.startswith(".tmp-")]
    modes = {stat.S_IMODE(os.stat(cache / n).st_mode) for n in os.listdir(cache) if n.endswith(".npy")}
    assert modes == {0o644}  # readable as open() makes a file, not the temporary file's 0600


def test_a_data_set_over_the_memory_budget_is_memory_mapped_and_trains_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ImageNet-sized subsets cannot be copied into RAM: over the budget, the splits are views of a split-ordered
    # memory-mapped file, and a trial sees exactly the same images as with the data in memory.
    from mixnas.evaluators.base import TrialContext
    from mixnas.evaluators.proxy import ProxyEvaluator
    from mixnas.training.config import ProxyConfig
    from mixnas.search_space.presets import load_arch_preset

    root = tmp_path / "images"
    write_folder(root)
    spec = DataSpec(str(root), resolution=8, cache_dir=str(tmp_path / "cache"), val_fraction=0.25)
    load_proxy_data.cache_clear()
    in_memory = load_proxy_data(spec)
    load_proxy_data.cache_clear()
    monkeypatch.setenv("MIXNAS_DATA_MEMORY_BYTES", "1")
    mapped = load_proxy_data(spec)
    load_proxy_data.cache_clear()
    assert in_memory.in_memory and not mapped.in_memory
    assert any(p.name.count(".split-") for p in (tmp_path / "cache").iterdir())
    for name in ("train_images", "train_labels", "val_images", "val_labels"):
        assert torch.equal(getattr(in_memory, name), getattr(mapped, name)), name
    arch = load_arch_preset("mixnet_tiny")
    config = ProxyConfig(epochs=1, batch_size=4)
    a = ProxyEvaluator(in_memory, config).score(arch, TrialContext(seed=3))
    b = ProxyEvaluator(mapped, config).score(arch, TrialContext(seed=3))
    assert a.status == b.status == "ok"
    assert (a.metrics["top1"], a.metrics["loss"]) == (b.metrics["top1"], b.metrics["loss"])


# --- hostile files (the seeded corpus is in tests/test_fuzz.py) ------------------------------------------------
def test_object_arrays_in_npz_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "train_data_batch_1.npz"
    np.savez(path, data=np.array([{"x": 1}], dtype=object), labels=np.array([1]))
    with pytest.raises(DataError, match="object \\(pickled\\) arrays"):
        load_images(DataSpec(source=str(path)))


def test_idx_with_no_images_and_corrupt_gzip_are_data_errors(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 4, 4), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="hold no data"):
        load_images(DataSpec(source=str(tmp_path / "train-images-idx3-ubyte")))
    gz = tmp_path / "gz"
    gz.mkdir()
    (gz / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 100)[:20])
    (gz / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(DataError, match="corrupt gzip"):
        load_images(DataSpec(source=str(gz)))


def test_over_long_paths_and_absurd_sizes_are_data_errors() -> None:
    with pytest.raises(DataError, match="no such file"):
        load_images(DataSpec(source="a" * 300))
    with pytest.raises(DataError, match=r"resolution: expected an integer in 1\.\.1024"):
        DataSpec(source="synthetic", resolution=10**8)
    with pytest.raises(DataError, match="GiB"):
        load_images(DataSpec(source="synthetic", classes=1000, images_per_class=10_000))


# --- data that can rank architectures -----------------------------------------------------------------------------
def test_one_class_cannot_rank_architectures(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"classes: expected an integer in 2\.\."):
        DataSpec("digits", classes=1)
    with pytest.raises(DataError, match="at least 2 distinct class names"):
        DataSpec("digits", classes=["3"])
    root = tmp_path / "one"
    (root / "cat").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (10, 10), (i * 40, 0, 0)).save(root / "cat" / f"img{i}.png")
    with pytest.raises(DataError, match="1 class \\(cat\\): a proxy task needs at least 2 classes"):
        load_proxy_data(DataSpec(str(root), resolution=8, cache_dir=str(tmp_path / "cache")))


def test_every_class_needs_a_held_out_image(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_folder(root)
    for extra in sorted((root / "green").glob("img*"))[1:]:
        extra.unlink()  # green keeps one image: nothing of it can be held out
    with pytest.raises(DataError, match="class 'green' has 1 image\\(s\\): every class needs at least 2"):
        load_proxy_data(DataSpec(str(root), resolution=8, cache_dir=str(tmp_path / "cache")))
