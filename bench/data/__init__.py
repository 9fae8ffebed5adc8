"""Datasets: contracts in :mod:`bench.data.base`, loaders beside it.

This module only holds registration lines (no heavy imports), so `bench ls` stays fast.
Data cards (source, checksum, factors, licence) live in the top-level ``datasets/`` folder,
which deliberately holds no Python package (``import datasets`` must reach Hugging Face's).
"""

from bench.registry import DATASETS

DATASETS.register(
    "dsprites-procedural",
    "bench.data.dsprites:ProceduralDSprites",
    "procedural dSprites replica, 3x6x40x32x32 factors, 64x64 binary, no download",
    kwargs={"resolution": 64},
)
DATASETS.register(
    "dsprites-procedural-32",
    "bench.data.dsprites:ProceduralDSprites",
    "procedural dSprites replica downscaled to 32x32 (fast CPU runs)",
    kwargs={"resolution": 32},
)

# -- datasets loaded from their official files (bench/data/sources.py: URLs, checksums) -----------
# ``source`` names the file set, so `bench data ls` reports the status without importing loaders.
DATASETS.register("dsprites", "bench.data.dsprites_npz:DSprites",
                  "dSprites, official npz; shape 3, scale 6, orientation 40, posX 32, posY 32 (colour dropped)",
                  source="dsprites")
DATASETS.register("shapes3d", "bench.data.shapes3d:Shapes3D",
                  "3dshapes.h5; floor/wall/object hue 10, scale 8, shape 4, orientation 15; 64x64 RGB",
                  source="shapes3d")
DATASETS.register("mpi3d-toy", "bench.data.mpi3d:MPI3D",
                  "MPI3D-toy, released version 6x6x2x3x3x40x40 (1,036,800 images)",
                  kwargs={"variant": "toy"}, source="mpi3d-toy")
DATASETS.register("mpi3d-realistic", "bench.data.mpi3d:MPI3D",
                  "MPI3D-realistic, released version 6x6x2x3x3x40x40",
                  kwargs={"variant": "realistic"}, source="mpi3d-realistic")
DATASETS.register("mpi3d-real", "bench.data.mpi3d:MPI3D",
                  "MPI3D-real, released version 6x6x2x3x3x40x40",
                  kwargs={"variant": "real"}, source="mpi3d-real")
DATASETS.register("mpi3d-toy-dlib", "bench.data.mpi3d:MPI3D",
                  "MPI3D-toy, earlier disentanglement_lib version 4x4x2x3x3x40x40 (460,800 images)",
                  kwargs={"variant": "toy", "release": "dlib"}, source="mpi3d-toy-dlib")
DATASETS.register("cars3d", "bench.data.cars3d:Cars3D",
                  "Cars3D resized to 64x64 (Lanczos); elevation 4, azimuth 24, object type 183",
                  source="cars3d")
DATASETS.register("smallnorb", "bench.data.smallnorb:SmallNORB",
                  "SmallNORB 64x64, disentanglement_lib factors: category 5, elevation 9, azimuth 18, lighting 6",
                  source="smallnorb")
DATASETS.register("smallnorb-instance", "bench.data.smallnorb:SmallNORBInstance",
                  "SmallNORB 64x64 with instance as a 5th factor (category 5, instance 10, elevation 9, azimuth 18, lighting 6)",
                  source="smallnorb")
DATASETS.register("celeba", "bench.data.celeba:CelebA",
                  "CelebA 64x64, center crop (DiffAE's default), 40 binary attributes, train split",
                  kwargs={"crop": "center"}, source="celeba")
DATASETS.register("celeba-d2c", "bench.data.celeba:CelebA",
                  "CelebA 64x64, D2C crop (DiffAE/PDAE/DisDiff), 40 binary attributes, train split",
                  kwargs={"crop": "d2c"}, source="celeba")
DATASETS.register("mnist", "bench.data.mnist:MNIST", "MNIST 28x28, 10 classes, 60,000 training images",
                  source="mnist")
DATASETS.register("mnist-32", "bench.data.mnist:MNIST", "MNIST zero-padded to 32x32 (for conv encoders)",
                  kwargs={"pad": 2}, source="mnist")
DATASETS.register("fashion-mnist", "bench.data.mnist:FashionMNIST",
                  "Fashion-MNIST 28x28, 10 classes, 60,000 training images", source="fashion-mnist")
DATASETS.register("fashion-mnist-32", "bench.data.mnist:FashionMNIST",
                  "Fashion-MNIST zero-padded to 32x32 (for conv encoders)", kwargs={"pad": 2}, source="fashion-mnist")
DATASETS.register("cifar10", "bench.data.cifar:CIFAR10", "CIFAR-10 32x32 RGB, 10 classes, 50,000 training images",
                  source="cifar10")
DATASETS.register("shapes3d-procedural", "bench.data.shapes3d_procedural:ProceduralShapes3D",
                  "procedural colour scenes with Shapes3D's factors (hues 10x10x10, scale 8, shape 4, orientation 15), no download")
