"""The on-disk layouts that `--data ROOT` accepts, and where each one's labels come from.

    class folders      ROOT/train/<class>/*.jpg, ROOT/val/<class>/*.jpg (torchvision's
                       ImageFolder; also ImageNet after the usual valprep.sh)
    ILSVRC2012         the official tars extracted: ROOT/train/<wnid>/*.JPEG, all val images
                       flat in ROOT/val/, and the devkit as ROOT/ILSVRC2012_devkit_t12/ or
                       ROOT/ILSVRC2012_devkit_t12.tar.gz. Val labels: the devkit's
                       data/ILSVRC2012_validation_ground_truth.txt (line i is the
                       ILSVRC2012_ID of ILSVRC2012_val_<i>.JPEG) mapped to wnids by
                       data/meta.mat (read with scipy.io.loadmat). The IDs are *not* in
                       sorted-wnid order, so they are never used as labels directly.
    Kaggle CLS-LOC     the Kaggle "ImageNet Object Localization Challenge" download, from its
                       root: ROOT/ILSVRC/Data/CLS-LOC/{train/<wnid>/, val/ flat},
                       ROOT/LOC_val_solution.csv (ImageId, PredictionString starting with the
                       wnid) and ROOT/LOC_synset_mapping.txt (wnid, then its words).
                       ROOT/ILSVRC/Data/CLS-LOC itself is accepted too.

In every layout a class is a train folder, labels are the sorted folder names' indices (as
ImageFolder, Caffe and cuda-convnet2 number ImageNet's classes), and a flat val image gets
the label of its wnid. Human class names ("tench") come from the words of meta.mat,
LOC_synset_mapping.txt, or a synset_words.txt / LOC_synset_mapping.txt next to class folders:
the first of the comma-separated words; class folders next to a devkit (val/ sorted by
valprep.sh) take them from its meta.mat. Without a mapping, a class's name is its folder name.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from netspec.data.walk import is_hidden
from netspec.errors import DataError

log = logging.getLogger("netspec.data")

CLASS_FOLDERS, ILSVRC2012, KAGGLE = "class folders", "ILSVRC2012", "Kaggle CLS-LOC"
DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"
KAGGLE_DATA = Path("ILSVRC", "Data", "CLS-LOC")
KAGGLE_SOLUTION, KAGGLE_MAPPING = "LOC_val_solution.csv", "LOC_synset_mapping.txt"
SYNSET_WORDS = ("synset_words.txt", KAGGLE_MAPPING)  # Caffe's ilsvrc12 file, Kaggle's

ACCEPTED = (
    "ROOT/train/<class>/*.jpg with ROOT/val/<class>/*.jpg; "
    "ROOT/train/<wnid>/ with a flat ROOT/val/ and ROOT/ILSVRC2012_devkit_t12[.tar.gz]; "
    "the Kaggle CLS-LOC root (ILSVRC/Data/CLS-LOC/, LOC_val_solution.csv, LOC_synset_mapping.txt)"
)

_VAL_NAME = re.compile(r"(ILSVRC2012_val_\d+)")


@dataclass(frozen=True)
class Layout:
    """A recognised layout. `data_dir` holds train/ and val/; listed paths are relative to it.

    val_wnids: for a flat val/, image name stem (e.g. "ILSVRC2012_val_00000001") -> wnid;
    None when val/ has class folders (or there is no val/). words: wnid -> human name.
    """

    kind: str
    data_dir: Path
    labels_source: str
    val_wnids: dict[str, str] | None = None
    words: dict[str, str] = field(default_factory=dict)

    def class_name(self, cls: str) -> str:
        return self.words.get(cls, cls)


def detect_layout(root: Path) -> Layout:
    """Recognise ROOT's layout. DataError (one line) when none fits, saying what was found."""
    kaggle = _kaggle_data_dir(root)
    if kaggle is not None:
        return _kaggle_layout(root, kaggle)
    if not (root / "train").is_dir():
        found = _visible_names(root)
        raise DataError(
            f"data directory '{root}' has no train/ folder and is no layout netspec knows "
            f"(found: {', '.join(found[:8]) + (' ...' if len(found) > 8 else '') or 'nothing'}); "
            f"accepted layouts: {ACCEPTED}")
    val = root / "val"
    if not val.is_dir() or not _is_flat(val):
        return Layout(CLASS_FOLDERS, root, "val/ class folder names",
                      words=_read_words_next_to(root))
    devkit = _find_devkit(root)
    if devkit is not None:
        return _official_layout(root, devkit)
    for up in (root, *root.parents[:3]):
        if (up / KAGGLE_SOLUTION).is_file():  # ILSVRC/Data/CLS-LOC given directly
            return _kaggle_layout(up, root)
    raise DataError(
        f"'{val}' holds images directly, not in class folders, and their labels are missing: "
        f"put the devkit next to it ({root}/{DEVKIT}/ or {root}/{DEVKIT}.tar.gz), or "
        f"{KAGGLE_SOLUTION} at the Kaggle root, or sort val/ into val/<wnid>/ folders")


def _visible_names(root: Path) -> list[str]:
    try:
        with os.scandir(root) as it:
            return sorted(e.name + ("/" if e.is_dir() else "") for e in it if not is_hidden(e.name))
    except OSError:
        return []


def _is_flat(val: Path) -> bool:
    """True when val/ holds image files directly and no class folders."""
    from netspec.data.decode import is_image_name

    files = folders = 0
    try:
        with os.scandir(val) as it:
            for e in it:
                if is_hidden(e.name):
                    continue
                try:
                    if e.is_dir():
                        folders += 1
                    elif is_image_name(e.name):
                        files += 1
                except OSError:
                    continue
    except OSError:
        return False
    return files > 0 and folders == 0


# -- ILSVRC2012 with its devkit ----------------------------------------------------------------

def _find_devkit(root: Path) -> Path | None:
    for candidate in (root / DEVKIT, root / f"{DEVKIT}.tar.gz"):
        if candidate.exists():
            return candidate
    return None


def _official_layout(root: Path, devkit: Path) -> Layout:
    read = _devkit_reader(devkit)
    truth_text = read(GROUND_TRUTH).decode("ascii", "replace")
    try:
        ids = [int(line) for line in truth_text.split()]
    except ValueError:
        raise DataError(f"'{devkit}': {GROUND_TRUTH} holds something other than "
                        f"ILSVRC2012_IDs, one per line") from None
    id_to_wnid, words = read_meta_mat(read(META), f"{devkit}/{META}")
    missing = sorted({i for i in ids if i not in id_to_wnid})
    if missing:
        raise DataError(f"'{devkit}': {GROUND_TRUTH} names ILSVRC2012_ID {missing[0]}, which "
                        f"{META} does not define")
    val_wnids = {f"ILSVRC2012_val_{i + 1:08d}": id_to_wnid[id_] for i, id_ in enumerate(ids)}
    return Layout(ILSVRC2012, root, f"{devkit.name}: {GROUND_TRUTH} mapped by {META}",
                  val_wnids=val_wnids, words=words)


def _devkit_reader(devkit: Path):
    """read(member) -> bytes, for the devkit folder or its .tar.gz (stdlib tarfile)."""
    if devkit.is_dir():
        def read(member: str) -> bytes:
            try:
                return (devkit / member).read_bytes()
            except OSError as exc:
                raise DataError(f"devkit '{devkit}' has no readable {member} "
                                f"({exc.strerror})") from None
        return read
    try:
        tar = tarfile.open(devkit, "r:*")
        members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataError(f"devkit archive '{devkit}' can't be read ({exc})") from None

    def read(member: str) -> bytes:
        info = members.get(member)
        if info is None:
            raise DataError(f"devkit archive '{devkit}' has no {DEVKIT}/{member}")
        return tar.extractfile(info).read()
    return read


def read_meta_mat(data: bytes, where: str) -> tuple[dict[int, str], dict[str, str]]:
    """The devkit's meta.mat: ILSVRC2012_ID -> wnid of the 1000 leaf synsets, and wnid ->
    the first of its words. Read with scipy.io.loadmat (pip install "netspec[imagenet]")."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"reading {where} needs SciPy: pip install \"netspec[imagenet]\"") from None
    try:
        synsets = loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        id_to_wnid, words = {}, {}
        for row in synsets.ravel():
            children = int(row["num_children"]) if "num_children" in synsets.dtype.names else 0
            if children:
                continue  # an inner node of the hierarchy, not one of the classes
            wnid = str(row["WNID"])
            id_to_wnid[int(row["ILSVRC2012_ID"])] = wnid
            words[wnid] = short_name(str(row["words"]))
    except DataError:
        raise
    except Exception as exc:  # scipy raises many kinds for a damaged file
        raise DataError(f"'{where}' can't be read as the devkit's meta.mat ({exc})") from None
    return id_to_wnid, words


def display_names(classes, names) -> list[str]:
    """Each class's human name, made unique where two synsets share one (ImageNet has two
    "crane"s and two "maillot"s): "crane (n02012849)"."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [name if counts[name] == 1 or name == cls else f"{name} ({cls})"
            for cls, name in zip(classes, names)]


def short_name(words: str) -> str:
    """'tench, Tinca tinca' -> 'tench'."""
    return words.split(",")[0].strip() or words.strip()


# -- Kaggle CLS-LOC ----------------------------------------------------------------------------

def _kaggle_data_dir(root: Path) -> Path | None:
    data = root / KAGGLE_DATA
    return data if (data / "train").is_dir() else None


def _kaggle_layout(root: Path, data_dir: Path) -> Layout:
    words = _read_mapping(root / KAGGLE_MAPPING) if (root / KAGGLE_MAPPING).is_file() else {}
    val = data_dir / "val"
    if not val.is_dir():
        return Layout(KAGGLE, data_dir, "no val/", words=words)
    if not _is_flat(val):
        return Layout(KAGGLE, data_dir, "val/ class folder names", words=words)
    solution = root / KAGGLE_SOLUTION
    if not solution.is_file():
        raise DataError(f"'{val}' holds images directly and their labels are missing: "
                        f"{solution} is not there (it comes with the Kaggle download)")
    return Layout(KAGGLE, data_dir, f"{KAGGLE_SOLUTION} (first wnid of each PredictionString)",
                  val_wnids=read_val_solution(solution), words=words)


def read_val_solution(path: Path) -> dict[str, str]:
    """LOC_val_solution.csv: ImageId -> the wnid that starts its PredictionString."""
    out = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if n == 1 and row and row[0].strip() == "ImageId":
                    continue
                if len(row) < 2 or not row[1].split():
                    raise DataError(f"{path}:{n}: expected 'ImageId,wnid x y x y ...', got "
                                    f"{','.join(row)[:60]!r}")
                out[row[0].strip()] = row[1].split()[0]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"'{path}' can't be read ({exc})") from None
    return out


def _read_mapping(path: Path) -> dict[str, str]:
    """LOC_synset_mapping.txt / synset_words.txt: 'n01440764 tench, Tinca tinca' per line."""
    words = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        wnid, _, rest = line.strip().partition(" ")
        if wnid:
            words[wnid] = short_name(rest) if rest.strip() else wnid
    return words


def _read_words_next_to(root: Path) -> dict[str, str]:
    """Class names for class folders: synset_words.txt, LOC_synset_mapping.txt, or the
    devkit's meta.mat (ImageNet with val/ already sorted into wnid folders). Only names
    depend on these, so an unreadable devkit is a warning here, not an error."""
    for name in SYNSET_WORDS:
        if (root / name).is_file():
            return _read_mapping(root / name)
    devkit = _find_devkit(root)
    if devkit is not None:
        try:
            return read_meta_mat(_devkit_reader(devkit)(META), f"{devkit}/{META}")[1]
        except DataError as exc:
            log.warning("class names: %s; using the folder names", exc)
    return {}


def val_name_key(name: str) -> str:
    """The key a flat val image's labels use: 'ILSVRC2012_val_00000001' from any of
    'ILSVRC2012_val_00000001.JPEG', '...JPEG.jpg'; otherwise the name without extension."""
    match = _VAL_NAME.search(name)
    return match.group(1) if match else os.path.splitext(name)[0]
