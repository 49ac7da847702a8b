"""Where each downloadable dataset's official files live, and their published size and SHA-256.

Every digest below is a published value, not one computed here (these machines cannot reach the
internet), with its source beside it:

* TFDS: tensorflow/datasets ``tensorflow_datasets/url_checksums/*`` (URL, size in bytes, SHA-256);
* Keras: ``keras.datasets.cifar10/cifar100.load_data`` (``file_hash=``, SHA-256);
* sizes of the CIFAR archives: the ``Content-Length`` the Toronto server reports (170,498,071
  and 169,001,437 bytes, the totals torchvision's and Keras' download bars print).

MNIST's SHA-256 values are TFDS's for its ``storage.googleapis.com/cvdf-datasets/mnist`` copy;
that copy, torchvision's ``ossci-datasets`` mirror and LeCun's original are the same bytes
(torchvision checks one MD5 per file against every mirror, and TFDS's sizes are the originals').
"""

from __future__ import annotations

from dataclasses import dataclass

from advimage.errors import UserInputError

__all__ = ["SOURCES", "DatasetSource", "RemoteFile", "source_for"]


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name on the server, size in bytes and SHA-256 (hex).

    ``split`` is the split that needs it (None: every split). ``extract_to`` names the folder a
    tar archive unpacks to (None: the file is used as downloaded).
    """

    name: str
    size: int
    sha256: str
    split: str | None = None
    extract_to: str | None = None


@dataclass(frozen=True)
class DatasetSource:
    """A dataset's mirrors (base URLs, tried in order; a file's URL is base + name) and files."""

    name: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]

    def files_for(self, split: str | None) -> tuple[RemoteFile, ...]:
        """The files ``split`` needs (all of them for None)."""
        return tuple(f for f in self.files if split is None or f.split in (None, split))


def _idx_files(sha: dict[str, tuple[int, str]]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, size, digest, split="train" if name.startswith("train")
                            else "test") for name, (size, digest) in sha.items())


_CIFAR_BASE = "https://www.cs.toronto.edu/~kriz/"

SOURCES: dict[str, DatasetSource] = {
    "cifar10": DatasetSource("cifar10", (_CIFAR_BASE,), (
        # SHA-256: TFDS url_checksums/cifar10.csv and Keras cifar10.load_data
        RemoteFile("cifar-10-python.tar.gz", 170_498_071,
                   "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                   extract_to="cifar-10-batches-py"),
    )),
    "cifar100": DatasetSource("cifar100", (_CIFAR_BASE,), (
        # SHA-256: TFDS url_checksums/cifar100.csv and Keras cifar100.load_data
        RemoteFile("cifar-100-python.tar.gz", 169_001_437,
                   "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                   extract_to="cifar-100-python"),
    )),
    # torchvision's mirror list, in its order (yann.lecun.com is often down); TFDS mnist.txt
    "mnist": DatasetSource("mnist", ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                                     "http://yann.lecun.com/exdb/mnist/"), _idx_files({
        "train-images-idx3-ubyte.gz": (
            9_912_422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": (
            28_881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": (
            1_648_877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": (
            4_542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    })),
    # Zalando's official location; TFDS fashion_mnist.txt
    "fashion-mnist": DatasetSource("fashion-mnist", (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), _idx_files({
            "train-images-idx3-ubyte.gz": (
                26_421_880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
            "train-labels-idx1-ubyte.gz": (
                29_515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
            "t10k-images-idx3-ubyte.gz": (
                4_422_102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
            "t10k-labels-idx1-ubyte.gz": (
                5_148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        })),
    # Stanford's official location (format 2, cropped digits); TFDS svhn_cropped.txt
    "svhn": DatasetSource("svhn", ("http://ufldl.stanford.edu/housenumbers/",), (
        RemoteFile("train_32x32.mat", 182_040_794,
                   "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                   split="train"),
        RemoteFile("test_32x32.mat", 64_275_384,
                   "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                   split="test"),
    )),
}


def source_for(name: str) -> DatasetSource:
    """The download source of dataset ``name`` (case-insensitive).

    Raises:
        UserInputError: one line listing the downloadable datasets when ``name`` is not one.
    """
    key = str(name).lower()
    if key not in SOURCES:
        raise UserInputError(f"dataset {name!r} cannot be downloaded; --download works for "
                         f"{', '.join(sorted(SOURCES))}")
    return SOURCES[key]
