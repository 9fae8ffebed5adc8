"""Where every dataset's files come from: official URLs, checksums, and the layout on disk.

One :class:`Source` per file set (several registered datasets can share one: ``mnist`` and
``mnist-32`` read the same files). A registration line names its source with
``source="..."`` metadata, which is how ``bench data ls`` reports a dataset's status
without importing its loader.

Checksums are md5, the only digest most of these datasets publish. ``md5`` is the digest of
a file exactly as downloaded (for a ``.gz`` file: of the compressed bytes); ``content_md5``
is the digest of the decompressed content, which identifies the data even when someone
recompressed it (Debian's ``dataset-fashion-mnist`` package ships gzip files whose bytes
differ from Zalando's, but whose content is identical). Where the dataset's authors publish
no checksum, the value is the one recorded by a widely used loader (named in ``checksum_from``)
and could not be verified offline when this catalogue was written; ``None`` means none is
known, and verification falls back to the structural checks of the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.data.files import DatasetFilesMissing
from bench.data.root import describe_root, root_flag


@dataclass(frozen=True)
class FileSpec:
    """One expected file: accepted paths under the data root (preferred first) and digests.

    A name that is an absolute path (a distribution package's install location) is used as
    it is: ``root / "/usr/share/..."`` is that absolute path.
    """

    names: tuple[str, ...]
    md5: str | None = None  # digest of the file as published (the first name)
    content_md5: str | None = None  # digest of the decompressed content

    def find(self, root: Path) -> Path | None:
        for name in self.names:
            if (root / name).is_file():
                return root / name
        return None

    def describe(self, root: Path) -> str:
        alternatives = f" (or {', '.join(str(root / n) for n in self.names[1:])})" if len(self.names) > 1 else ""
        return f"{root / self.names[0]}{alternatives}"


@dataclass(frozen=True)
class FileGlob:
    """A folder of many files (CelebA's JPEGs, Cars3D's .mat files): pattern and expected count."""

    folder: str
    pattern: str
    count: int

    def files(self, root: Path) -> list[Path]:
        folder = root / self.folder
        return sorted(folder.glob(self.pattern)) if folder.is_dir() else []

    def describe(self, root: Path) -> str:
        return f"{root / self.folder / self.pattern} ({self.count:,} files)"


@dataclass(frozen=True)
class Download:
    """One file to fetch: mirrors (official first), its md5, and how to unpack it."""

    urls: tuple[str, ...]
    filename: str  # saved as <root>/<into>/<filename>
    md5: str | None
    into: str
    unpack: str = "keep"  # keep | tar | zip
    members: tuple[tuple[str, str], ...] = ()  # (prefix in the archive, folder under <root>/<into>)


@dataclass(frozen=True)
class Source:
    """A dataset's file set."""

    key: str
    title: str
    homepage: str
    licence: str
    files: tuple[FileSpec, ...] = ()
    globs: tuple[FileGlob, ...] = ()
    downloads: tuple[Download, ...] = ()
    checksum_from: str = ""
    notes: str = ""

    def missing(self, root: Path) -> list[str]:
        """Descriptions of the expected files that are not present under ``root``."""
        out = [spec.describe(root) for spec in self.files if spec.find(root) is None]
        for glob in self.globs:
            found = len(glob.files(root))
            if found != glob.count:
                out.append(f"{glob.describe(root)}: found {found:,}")
        return out

    def status(self, root: Path) -> str:
        return "present" if not self.missing(root) else "missing"

    def how_to_obtain(self) -> str:
        urls = [d.urls[0] for d in self.downloads]
        lines = [f"get them with `bench data download {self.key}{root_flag()}`"]
        if urls:
            lines.append("or download by hand from " + ", ".join(urls) + " and place them at the paths above")
        if self.notes:
            lines.append(self.notes)
        return "; ".join(lines)

    def require(self, root: Path, dataset: str) -> None:
        """Raise :class:`DatasetFilesMissing` naming every missing file and how to get it."""
        missing = self.missing(root)
        if missing:
            raise DatasetFilesMissing(
                f"dataset {dataset!r} needs files that are not under the data root {describe_root()}:\n"
                + "\n".join(f"  missing: {m}" for m in missing)
                + f"\n{self.how_to_obtain()}"
            )


def _idx_files(folder: str, gz_md5: dict[str, str | None], raw_md5: dict[str, str],
               system_dir: str | None = None) -> tuple[FileSpec, ...]:
    """The four idx files, gzipped or raw; ``system_dir`` is an absolute fallback (a distribution package)."""
    return tuple(
        FileSpec((f"{folder}/{stem}.gz", f"{folder}/{stem}") + ((f"{system_dir}/{stem}.gz",) if system_dir else ()),
                 md5=gz_md5[stem], content_md5=raw_md5[stem])
        for stem in raw_md5
    )


_MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

_MNIST_GZ = dict(zip(_MNIST_STEMS, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                    "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")))
_MNIST_RAW = dict(zip(_MNIST_STEMS, ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
                                     "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637")))
_FASHION_GZ = dict(zip(_MNIST_STEMS, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                      "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")))
_FASHION_RAW = dict(zip(_MNIST_STEMS, ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                                       "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965")))

#: where Debian/Ubuntu's ``dataset-fashion-mnist`` package installs the original files (absolute:
#: a file name that is an absolute path is looked up there, whatever the data root)
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

_NORB_BASE = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
NORB_CHUNKS = ("smallnorb-5x46789x9x18x6x2x96x96-training", "smallnorb-5x01235x9x18x6x2x96x96-testing")
_NORB_GZ_MD5 = {
    f"{NORB_CHUNKS[0]}-dat": "66054832f9accfe74a0f4c36a75bc0a2",
    f"{NORB_CHUNKS[0]}-cat": "23c8b86101fbf0904a000b43d3ed2fd9",
    f"{NORB_CHUNKS[0]}-info": "51dee1210a742582ff607dfd94e332e3",
    f"{NORB_CHUNKS[1]}-dat": "e4ad715691ed5a3a5f138751a4ceb071",
    f"{NORB_CHUNKS[1]}-cat": "5aa791cd7e6016cf957ce9bdb93b8603",
    f"{NORB_CHUNKS[1]}-info": "a9454f3864d7fd4bb3ea7fc3eb84924e",
}

_MPI3D_BASE = "https://storage.googleapis.com/disentanglement_dataset/Final_Dataset/"
_MPI3D_MD5 = {"toy": "55889cb7c7dfc655d6e0277beee88868", "realistic": "59a6225b88b635365f70c91b3e52f70f",
              "real": "0f33f609918fb5c97996692f91129802"}
_DRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
_CIFAR_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
              "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
              "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
              "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"}
_DISENT = "nmichlo/disent (disent/dataset/data/_groundtruth__*.py, 'full' md5 hashes)"


def _mpi3d(variant: str) -> Source:
    name = f"mpi3d_{variant}.npz"
    return Source(
        key=f"mpi3d-{variant}",
        title=f"MPI3D-{variant} (released version, 6x6x2x3x3x40x40 = 1,036,800 images)",
        homepage="https://github.com/rr-learning/disentanglement_dataset",
        licence="CC BY 4.0 (see the homepage)",
        files=(FileSpec((f"mpi3d/{name}",), md5=_MPI3D_MD5[variant]),),
        downloads=(Download((_MPI3D_BASE + name,), name, _MPI3D_MD5[variant], "mpi3d"),),
        checksum_from=_DISENT,
        notes="the file is about 12 GB",
    )


SOURCES: dict[str, Source] = {}


def _add(source: Source) -> None:
    if source.key in SOURCES:
        raise ValueError(f"source {source.key!r} defined twice")
    SOURCES[source.key] = source


_add(Source(
    key="dsprites",
    title="dSprites (Matthey et al. 2017)",
    homepage="https://github.com/deepmind/dsprites-dataset",
    licence="Apache 2.0",
    files=(FileSpec(("dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",), md5="7da33b31b13a06f4b04a70402ce90c2e"),),
    downloads=(Download(
        ("https://github.com/deepmind/dsprites-dataset/raw/master/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",),
        "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", "7da33b31b13a06f4b04a70402ce90c2e", "dsprites"),),
    checksum_from="recorded by third-party loaders (e.g. latte's dsprites.py); DeepMind publishes none",
))
_add(Source(
    key="shapes3d",
    title="3dshapes (Burgess & Kim 2018)",
    homepage="https://github.com/deepmind/3d-shapes",
    licence="Apache 2.0",
    files=(FileSpec(("3dshapes/3dshapes.h5",), md5="099a2078d58cec4daad0702c55d06868"),),
    downloads=(Download(("https://storage.googleapis.com/3d-shapes/3dshapes.h5",), "3dshapes.h5",
                        "099a2078d58cec4daad0702c55d06868", "3dshapes"),),
    checksum_from=_DISENT,
))
for _variant in ("toy", "realistic", "real"):
    _add(_mpi3d(_variant))
_add(Source(
    key="mpi3d-toy-dlib",
    title="MPI3D-toy, earlier version used by disentanglement_lib (4x4x2x3x3x40x40 = 460,800 images)",
    homepage="https://github.com/google-research/disentanglement_lib (bin/dlib_download_data)",
    licence="CC BY 4.0 (see https://github.com/rr-learning/disentanglement_dataset)",
    files=(FileSpec(("mpi3d_toy/mpi3d_toy.npz",)),),
    downloads=(Download(
        ("https://storage.googleapis.com/disentanglement_dataset/data_npz/sim_toy_64x_ordered_without_heldout_factors.npz",),
        "mpi3d_toy.npz", None, "mpi3d_toy"),),
    checksum_from="none published",
    notes="this is disentanglement_lib's path and file; the released 6x6 version lives in mpi3d/",
))
_add(Source(
    key="cars3d",
    title="Cars3D (Reed et al. 2015, from Fidler et al. 2012)",
    homepage="http://www.scottreed.info/",
    licence="research use (no licence stated by the authors)",
    globs=(FileGlob("cars", "*.mat", 183),),
    downloads=(Download(("http://www.scottreed.info/files/nips2015-analogy-data.tar.gz",),
                        "nips2015-analogy-data.tar.gz", "4e866a7919c1beedf53964e6f7a23686", ".",
                        unpack="tar", members=(("data/cars/", "cars"),)),),
    checksum_from=_DISENT + " for the archive; none for the individual .mat files",
))
_add(Source(
    key="smallnorb",
    title="SmallNORB (LeCun, Huang & Bottou 2004)",
    homepage="https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/",
    licence="research use (see the homepage)",
    files=tuple(
        FileSpec((f"small_norb/{stem}.mat.gz", f"small_norb/{stem}.mat"), md5=md5)
        for stem, md5 in _NORB_GZ_MD5.items()
    ),
    downloads=tuple(Download((f"{_NORB_BASE}{stem}.mat.gz",), f"{stem}.mat.gz", md5, "small_norb")
                    for stem, md5 in _NORB_GZ_MD5.items()),
    checksum_from=_DISENT + " (of the .gz files; no digest of the gunzipped files is known)",
))
_add(Source(
    key="celeba",
    title="CelebA, aligned and cropped (Liu et al. 2015)",
    homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
    licence="non-commercial research use only (see the homepage)",
    files=(FileSpec(("celeba/list_attr_celeba.txt",), md5="75e246fa4810816ffd6ee81facbd244c"),
           FileSpec(("celeba/list_eval_partition.txt",), md5="d32c9cbf5e040fd4025c592c306e6668")),
    globs=(FileGlob("celeba/img_align_celeba", "*.jpg", 202_599),),
    downloads=(
        Download((_DRIVE + "0B7EVK8r0v71pZjFTYXZWM3FlRnM",), "img_align_celeba.zip", "00d2c5bc6d35e252742224ab0c1e8fcb",
                 "celeba", unpack="zip", members=(("img_align_celeba/", "img_align_celeba"),)),
        Download((_DRIVE + "0B7EVK8r0v71pblRyaVFSWGxPY0U",), "list_attr_celeba.txt", "75e246fa4810816ffd6ee81facbd244c", "celeba"),
        Download((_DRIVE + "0B7EVK8r0v71pY0NSMzRuSXJEVkk",), "list_eval_partition.txt", "d32c9cbf5e040fd4025c592c306e6668", "celeba"),
    ),
    checksum_from="torchvision.datasets.CelebA (file ids and md5s)",
    notes="Google Drive may refuse automated downloads when its quota is exceeded; then fetch the three "
          "files in a browser from the homepage's Google Drive folder (Img/img_align_celeba.zip, Anno/list_attr_celeba.txt, "
          "Eval/list_eval_partition.txt) and unzip img_align_celeba.zip inside <root>/celeba/",
))
_add(Source(
    key="mnist",
    title="MNIST (LeCun et al. 1998)",
    homepage="http://yann.lecun.com/exdb/mnist/",
    licence="CC BY-SA 3.0 (as distributed by the authors)",
    files=_idx_files("mnist", _MNIST_GZ, _MNIST_RAW),
    downloads=tuple(Download((f"https://ossci-datasets.s3.amazonaws.com/mnist/{s}.gz", f"http://yann.lecun.com/exdb/mnist/{s}.gz"),
                             f"{s}.gz", _MNIST_GZ[s], "mnist") for s in _MNIST_STEMS),
    checksum_from="torchvision.datasets.MNIST (gzip md5s); digests of the raw idx files as widely recorded",
    notes="yann.lecun.com often refuses downloads; the first URL is torchvision's mirror of the same files",
))
_add(Source(
    key="fashion-mnist",
    title="Fashion-MNIST (Xiao, Rasul & Vollgraf 2017)",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    licence="MIT",
    files=_idx_files("fashion-mnist", _FASHION_GZ, _FASHION_RAW, system_dir=DEBIAN_FASHION_MNIST),
    downloads=tuple(Download((f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{s}.gz",
                              f"https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/{s}.gz"),
                             f"{s}.gz", _FASHION_GZ[s], "fashion-mnist") for s in _MNIST_STEMS),
    checksum_from="Zalando's README (gzip md5s); content md5s verified here on Debian's dataset-fashion-mnist files",
    notes=f"on Debian/Ubuntu, `apt-get install dataset-fashion-mnist` installs the same idx files under "
          f"{DEBIAN_FASHION_MNIST}/, where they are found without any setting",
))
_add(Source(
    key="cifar10",
    title="CIFAR-10 (Krizhevsky 2009)",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    licence="no licence stated by the authors (research use)",
    files=tuple(FileSpec((f"cifar10/cifar-10-batches-py/{name}",), md5=md5) for name, md5 in _CIFAR_MD5.items()),
    downloads=(Download(("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",), "cifar-10-python.tar.gz",
                        "c58f30108f718f92721af3b95e74349a", "cifar10", unpack="tar",
                        members=(("cifar-10-batches-py/", "cifar-10-batches-py"),)),),
    checksum_from="torchvision.datasets.CIFAR10",
))


def get_source(key: str) -> Source:
    try:
        return SOURCES[key]
    except KeyError:
        raise KeyError(f"no file source {key!r}; known: {', '.join(sorted(SOURCES))}") from None
