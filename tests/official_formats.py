"""Writers of small file sets in the exact official formats (same names, keys, dtypes, layouts).

Used by the data tests: each writer puts a reduced-size copy of a dataset's files under a
data root, so the loaders run through their real parsing code. Image contents encode the
item (a factor combination or a row number), so the tests can check that every image
lands at the right index. Nothing here is random.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

# -- MNIST / Fashion-MNIST: IDX ---------------------------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 00 00 08 ndim, big-endian uint32 dims, data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def mnist_images(n: int, offset: int) -> np.ndarray:
    """(n, 28, 28) uint8: image k has value (offset + k) % 256 at pixel (k % 28, 3), else its row index."""
    x = np.tile(np.arange(28, dtype=np.uint8)[None, :, None], (n, 1, 28))
    for k in range(n):
        x[k, k % 28, 3] = (offset + k) % 256
    return x


def write_mnist(root: Path, folder: str = "mnist", n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """Train files gzipped, test files raw (both forms are official/accepted)."""
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": mnist_images(n_train, 0),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": mnist_images(n_test, 100),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) + 3) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        if stem.startswith("train"):
            (d / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
        else:
            (d / stem).write_bytes(idx_bytes(arr))
    return arrays


# -- CIFAR-10: python pickles ---------------------------------------------------------------------
CIFAR_CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar10(root: Path, per_batch: int = 4) -> np.ndarray:
    """Five training batches and a test batch of ``per_batch`` images; returns all rows (N, 3072)."""
    d = root / "cifar10" / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    rows = []
    for b, name in enumerate(names):
        data = np.zeros((per_batch, 3072), dtype=np.uint8)
        for k in range(per_batch):
            item = b * per_batch + k
            data[k, :1024] = item  # red plane
            data[k, 1024:2048] = 100 + k  # green plane
            data[k, 2048 + 5] = 200  # blue plane, pixel (0, 5)
        batch = {b"batch_label": f"batch {b + 1}".encode(), b"labels": [(b + k) % 10 for k in range(per_batch)],
                 b"data": data, b"filenames": [f"img_{b}_{k}.png".encode() for k in range(per_batch)]}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        rows.append(data)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": CIFAR_CLASSES, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f, protocol=2)
    return np.concatenate(rows)


# -- dSprites: npz -----------------------------------------------------------------------------------


def grid(sizes: tuple[int, ...]) -> np.ndarray:
    """All factor combinations (N, K), first factor most significant."""
    return np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), axis=-1).reshape(-1, len(sizes))


def write_dsprites(root: Path, sizes: tuple[int, ...], **overrides) -> Path:
    """``imgs`` (N, 64, 64) 0/1 masks: item i lights the pixels (0, 0..i); latents with colour 0."""
    classes = grid(sizes)
    n = len(classes)
    imgs = np.zeros((n, 64, 64), dtype=np.uint8)
    for i in range(n):
        imgs[i, 0, : i + 1] = 1
    latents_classes = np.concatenate([np.zeros((n, 1), np.int64), classes], axis=1)
    arrays = {"imgs": imgs, "latents_classes": latents_classes, "latents_values": latents_classes.astype(np.float64),
              "metadata": np.array({"latents_sizes": np.array((1,) + tuple(sizes))}, dtype=object)}
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = root / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


# -- Shapes3D: HDF5 ------------------------------------------------------------------------------------
SHAPES3D_VALUES = (np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10),
                   np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30, 30, 15))


def write_shapes3d(root: Path, sizes: tuple[int, ...], images_key: str = "images", side: int = 64,
                   shuffle: bool = False) -> Path:
    """``images`` (N, 64, 64, 3) uint8 (pixel (0, 0) = item number) and ``labels`` (N, 6) float64 values."""
    import h5py

    classes = grid(sizes)
    if shuffle:
        classes = classes[::-1]
    n = len(classes)
    labels = np.stack([SHAPES3D_VALUES[k][classes[:, k]] for k in range(6)], axis=1)
    images = np.zeros((n, side, side, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, :, :, 2] = 7
    path = root / "3dshapes" / "3dshapes.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(images_key, data=images, compression="gzip", chunks=(min(n, 8), side, side, 3))
        f.create_dataset("labels", data=labels)
    return path


# -- MPI3D: npz with one uncompressed member -----------------------------------------------------------


def write_mpi3d(root: Path, relative: str, n: int, key: str = "images", compressed: bool = False) -> Path:
    """``images`` (n, 64, 64, 3) uint8 with pixel (0, 0, 0) = item % 256, (0, 0, 1) = item // 256."""
    images = np.zeros((n, 64, 64, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, 0, 0, 1] = np.arange(n) // 256
    images[:, 10:20, 30:40, 2] = 50
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **{key: images})
    return path


# -- Cars3D: MATLAB files ---------------------------------------------------------------------------------


def cars_value(elevation: int, azimuth: int, model: int) -> tuple[int, int, int]:
    return (10 + 40 * elevation, 5 * azimuth, 100 + 50 * model)


def write_cars3d(root: Path, sizes: tuple[int, int, int], shape: tuple[int, ...] | None = None) -> list[Path]:
    """One ``car_XXX_mesh.mat`` per model with ``im`` (128, 128, 3, azimuths, elevations), constant views."""
    import scipy.io

    n_elev, n_azim, n_models = sizes
    folder = root / "cars"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for model in range(n_models):
        im = np.zeros(shape or (128, 128, 3, n_azim, n_elev), dtype=np.uint8)
        if shape is None:
            for e in range(n_elev):
                for a in range(n_azim):
                    im[:, :, :, a, e] = cars_value(e, a, model)
        path = folder / f"car_{model + 1:03d}_mesh.mat"
        scipy.io.savemat(path, {"im": im}, do_compression=True)
        paths.append(path)
    return paths


# -- SmallNORB: binary matrices -------------------------------------------------------------------------------
NORB_MAGIC = {np.dtype(np.uint8): 0x1E3D4C55, np.dtype(np.int32): 0x1E3D4C54}


def norb_bytes(arr: np.ndarray) -> bytes:
    """NORB binary matrix: int32 magic, int32 ndim, max(3, ndim) int32 dims (padded with 1), data."""
    dims = list(arr.shape) + [1] * max(0, 3 - arr.ndim)
    return struct.pack(f"<iI{len(dims)}i", NORB_MAGIC[arr.dtype], arr.ndim, *dims) + np.ascontiguousarray(arr).tobytes()


def norb_value(category: int, instance: int, elevation: int, azimuth: int, lighting: int) -> int:
    return category * 100 + instance * 50 + elevation * 20 + azimuth * 7 + lighting * 3


def write_smallnorb(root: Path, sizes: tuple[int, ...], gzipped: bool = True) -> dict[str, Path]:
    """Training chunk: odd instances, testing chunk: even ones; rows in a scrambled order."""
    full = grid(sizes)
    paths = {}
    folder = root / "small_norb"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = ("smallnorb-5x46789x9x18x6x2x96x96-training", "smallnorb-5x01235x9x18x6x2x96x96-testing")
    for parity, chunk in enumerate(chunks):
        rows = full[full[:, 1] % 2 == (1 - parity)][::-1]  # reversed: the loader must reorder
        n = len(rows)
        dat = np.zeros((n, 2, 96, 96), dtype=np.uint8)
        for k, (c, i, e, a, light) in enumerate(rows):
            dat[k, 0] = norb_value(c, i, e, a, light)  # left camera
            dat[k, 1] = 255  # right camera: must not be used
        cat = rows[:, 0].astype(np.int32)
        info = np.stack([rows[:, 1], rows[:, 2], 2 * rows[:, 3], rows[:, 4]], axis=1).astype(np.int32)
        for part, arr in (("dat", dat), ("cat", cat), ("info", info)):
            name = f"{chunk}-{part}.mat" + (".gz" if gzipped else "")
            data = norb_bytes(arr)
            (folder / name).write_bytes(gzip.compress(data) if gzipped else data)
            paths[f"{chunk}-{part}"] = folder / name
    return paths


# -- CelebA: JPEGs + text files ----------------------------------------------------------------------------------
CELEBA_ATTRIBUTES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
                     "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
                     "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
                     "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
                     "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie "
                     "Young").split()
CELEBA_PARTITION = (0, 0, 0, 0, 1, 2)


def celeba_attributes(n: int) -> np.ndarray:
    """(n, 40) in {-1, 1}: image k has attribute j when (j + k) % 3 == 0."""
    j, k = np.meshgrid(np.arange(40), np.arange(n))
    return np.where((j + k) % 3 == 0, 1, -1)


def write_celeba(root: Path, n: int = len(CELEBA_PARTITION), size: tuple[int, int] = (178, 218)) -> list[Path]:
    """``n`` 178x218 JPEGs whose red channel is the row index and green the image number × 20."""
    from PIL import Image

    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    width, height = size
    names = [f"{k + 1:06d}.jpg" for k in range(n)]
    paths = []
    for k, name in enumerate(names):
        arr = np.zeros((height, width, 3), dtype=np.uint8)
        arr[:, :, 0] = np.minimum(np.arange(height), 255)[:, None]
        arr[:, :, 1] = 20 * k
        path = folder / "img_align_celeba" / name
        Image.fromarray(arr).save(path, quality=95)
        paths.append(path)
    attrs = celeba_attributes(n)
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, attrs)]
    (folder / "list_attr_celeba.txt").write_text("\r\n".join(lines) + "\r\n")
    (folder / "list_eval_partition.txt").write_text(
        "\r\n".join(f"{name} {p}" for name, p in zip(names, CELEBA_PARTITION[:n])) + "\r\n")
    return paths
