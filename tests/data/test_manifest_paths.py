"""A prepared cache's manifest is data (issue #28, red-team kinds 1 and 2): every field changed
to the wrong type, nested deeper or removed is one DataError naming the manifest and the field;
every file it names must resolve inside the cache (symbolic links and '..' resolved), so that
neither reading a split nor repairing a damaged shard reaches outside it."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from mutations import mutations, name

from netspec.cli import main
from netspec.data import open_dataset, prepare_dataset
from netspec.data.cache import MANIFEST_NAME, PLAN_NAME, manifest_schema
from netspec.errors import DataError


@pytest.fixture
def prepared(small_demo, tmp_path):
    source = shutil.copytree(small_demo, tmp_path / "src")
    root = tmp_path / "box" / "cache"
    prepare_dataset(source, root, base=24, workers=0, progress=False)
    return root, json.loads((root / MANIFEST_NAME).read_text())


def _write(root, manifest):
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


def _refused(root, *fields):
    with pytest.raises(DataError) as e:
        open_dataset(root)
    msg = str(e.value)
    assert MANIFEST_NAME in msg and all(f"'{f}'" in msg for f in fields), msg
    return msg


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_every_field_of_the_manifest(prepared):
    root, manifest = prepared
    cases = list(mutations(manifest, manifest_schema(root)))
    assert {k for k, *_ in cases} == {"wrong type", "nested", "missing"}
    assert len(cases) > 40, len(cases)
    for _kind, path, doc in cases:
        _write(root, doc)
        _refused(root, name(path))
    _write(root, manifest)
    assert open_dataset(root).size("train") == 120


@pytest.mark.parametrize("field, value", [
    (("splits", "train", "shards", 0, 0), "../outside/00000.npy"),
    (("splits", "train", "shards", 0, 0), "/etc/hostname"),
    (("splits", "train", "labels"), "../train-labels.npy"),
    (("splits", "val", "files"), "../../val-files.txt"),
    (("mean",), "train/../../mean.npy"),
])
def test_names_outside_the_cache_are_refused(prepared, field, value):
    root, manifest = prepared
    node = manifest
    for p in field[:-1]:
        node = node[p]
    node[field[-1]] = value
    _write(root, manifest)
    msg = _refused(root, name(field))
    assert "inside the cache" in msg


def test_a_symlink_out_of_the_cache_is_refused(prepared, tmp_path):
    root, manifest = prepared
    outside = tmp_path / "elsewhere"
    shutil.copytree(root / "train", outside)
    # a shard file that is a link to a copy outside
    shard = manifest["splits"]["train"]["shards"][0][0]
    (root / shard).unlink()
    (root / shard).symlink_to(outside / os.path.basename(shard))
    _refused(root, "splits.train.shards[0][0]")
    # the whole split folder a link outside
    (root / shard).unlink()
    shutil.rmtree(root / "train")
    (root / "train").symlink_to(outside)
    _refused(root, "splits.train.shards[0][0]")


def test_split_and_shard_names_must_be_the_splits_own(prepared):
    root, manifest = prepared
    bad = json.loads(json.dumps(manifest))
    bad["splits"]["../x"] = bad["splits"].pop("val")
    _write(root, bad)
    _refused(root, "splits.../x")
    bad = json.loads(json.dumps(manifest))
    bad["splits"]["train"]["shards"][0][0] = "val/00000.npy"
    _write(root, bad)
    _refused(root, "splits.train.shards[0][0]")


def test_repairing_a_damaged_shard_writes_nothing_outside(prepared):
    """The repair decodes a shard again into <cache>/<split>/NNNNN.npy, the split and index
    read from the shard's name: a name of '../00001.npy' used to write into the parent."""
    root, manifest = prepared
    parent = root.parent
    before = _tree(parent)
    shard = manifest["splits"]["train"]["shards"][1][0]
    manifest["splits"]["train"]["shards"][1][0] = "train/../../00001.npy"
    manifest["splits"]["train"]["checksums"] = {"train/../../00001.npy": {"crc32": 1,
                                                                           "bytes": 1}}
    (root / shard).unlink()
    _write(root, manifest)
    _refused(root, "splits.train.shards[1][0]")
    assert _tree(parent) == [p for p in before if p != f"cache/{shard}"]


def test_a_tampered_plan_is_refused_on_resume(prepared, small_demo):
    root, _ = prepared
    plan = json.loads((root / PLAN_NAME).read_text())
    plan["shard_size"] = "lots"
    (root / PLAN_NAME).write_text(json.dumps(plan))
    (root / MANIFEST_NAME).unlink()          # prepare resumes from the plan
    res = CliRunner().invoke(main, ["prepare", "--data", str(root.parent.parent / "src"),
                                    "--out", str(root), "--base", "24", "-j", "0"])
    assert res.exit_code == 2, res.output
    assert "plan.json" in res.output and "field 'shard_size'" in res.output, res.output
    assert "Traceback" not in res.output


def test_cli_reports_a_tampered_manifest_in_one_line(prepared):
    root, manifest = prepared
    manifest["base"] = "24"
    _write(root, manifest)
    res = CliRunner().invoke(main, ["prepare", "--data", str(root.parent.parent / "src"),
                                    "--out", str(root), "--base", "24", "-j", "0"])
    assert res.exit_code == 2 and "field 'base'" in res.output, res.output
    assert "Traceback" not in res.output
