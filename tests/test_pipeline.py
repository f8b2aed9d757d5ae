"""Pipeline pieces that need no Prefect: roots, bounded queues, stopping before anything is sent."""
import os

from flows.pipeline import independent_roots


def test_roots_inside_other_roots_and_duplicates_are_dropped(tmp_path):
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (a / "f.jpg").write_bytes(b"x")
    link = tmp_path / "link-to-sub"
    os.symlink(a / "sub", link)
    roots = [str(a / "sub"), str(a), str(tmp_path / "b"), str(a), str(link), str(a / "f.jpg"), str(tmp_path / "ab")]
    assert independent_roots(roots) == [str(a), str(tmp_path / "b"), str(tmp_path / "ab")]


def test_a_sibling_with_a_common_prefix_is_not_inside(tmp_path):
    roots = [str(tmp_path / "photos"), str(tmp_path / "photos-2024")]
    assert independent_roots(roots) == roots
