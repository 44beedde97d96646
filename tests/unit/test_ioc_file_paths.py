"""The data-root boundary of the frame writer (bluestem.ioc.file_paths), on real dirs."""

from __future__ import annotations

import os

import pytest

from bluestem.ioc.file_paths import (
    MAX_NAME_BYTES,
    MAX_STEM_BYTES,
    check_file_name,
    check_file_path,
    check_full_name,
)
from bluestem.ioc.hdf import format_file_name
from bluestem.ioc.validation import InvalidSetting


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "out", target_is_directory=True)
    return tmp_path / "root"


def test_file_path_at_or_under_the_root_is_allowed(root):
    for path in (root, root / "sub", f"{root}/sub/..", f"{root}/"):
        assert check_file_path("PV", str(path), str(root)) == str(path)


@pytest.mark.parametrize(
    "path, why",
    [
        ("../../x", "relative path"),
        ("sub", "relative path"),
        ("{out}", "outside the data root"),
        ("{root}/link", "outside the data root"),  # a symbolic link is followed
        ("{root}/../out", "outside the data root"),
        ("{root}-sibling", "outside the data root"),  # a name prefix is not a parent
    ],
)
def test_file_path_outside_the_root_is_refused_naming_it(root, path, why):
    (root.parent / "root-sibling").mkdir(exist_ok=True)
    path = path.format(root=root, out=root.parent / "out")
    with pytest.raises(InvalidSetting) as info:
        check_file_path("HDF1:FilePath", path, str(root))
    text = str(info.value)
    assert text.startswith("HDF1:FilePath: ")
    assert repr(path) in text and why in text and repr(os.path.realpath(root)) in text


def test_missing_directory_is_left_to_be_named_missing(root):
    missing = str(root.parent / "nowhere")
    assert check_file_path("PV", missing, str(root)) == missing
    assert check_file_path("PV", "../x", "") == "../x"  # no root: no boundary


@pytest.mark.parametrize("name", ["scan", "det-2f6c", "a.b", "..x", "é" * 100])
def test_plain_stems_are_allowed(name):
    assert check_file_name("PV", name) == name


@pytest.mark.parametrize(
    "name, words",
    [
        ("", ["not a file name stem"]),
        (".", ["not a file name stem"]),
        ("..", ["not a file name stem"]),
        ("a/b", ["'a/b'", "not a file name stem"]),
        ("x\0y", ["control character"]),
        ("x\ny", ["control character"]),
        ("n" * (MAX_STEM_BYTES + 1), [f"{MAX_STEM_BYTES + 1} bytes", f"at most {MAX_STEM_BYTES}"]),
        ("é" * 101, ["202 bytes"]),  # bytes, not characters
    ],
)
def test_other_file_names_are_refused_naming_them(name, words):
    with pytest.raises(InvalidSetting) as info:
        check_file_name("HDF1:FileName", name)
    for word in words:
        assert word in str(info.value)


def full(template, path, name="scan", number=1):
    return format_file_name(template, path, name, number)


def test_the_default_template_formats_a_file_in_file_path(root):
    name = full("%s%s_%6.6d.h5", str(root))
    assert name == f"{root}/scan_000001.h5"
    assert check_full_name("PV", "t", name, str(root), str(root)) == name


@pytest.mark.parametrize(
    "template, why",
    [
        ("%.0s/elsewhere/%s_%6.6d.h5", "outside FilePath"),
        ("%s../%s_%6.6d.h5", "outside FilePath"),
        ("%s%s/%6.6d.h5", "outside FilePath"),
        ("%slink/%s_%d.h5", "outside FilePath"),
        ("%s%s_%d.h5/", "names no file"),
        ("%s" + "x" * MAX_NAME_BYTES + "%s%d", f"at most {MAX_NAME_BYTES}"),
    ],
)
def test_templates_that_leave_file_path_are_refused(root, template, why):
    name = full(template, str(root))
    with pytest.raises(InvalidSetting) as info:
        check_full_name("HDF1:FileTemplate", template, name, str(root), str(root))
    assert repr(template) in str(info.value) and why in str(info.value)


def test_a_file_path_outside_the_root_cannot_be_formatted_into(root):
    out = str(root.parent / "out")
    with pytest.raises(InvalidSetting, match="outside the data root"):
        check_full_name("PV", "t", full("%s%s_%d.h5", out), out, str(root))
