"""Kodak download (against a local file:// mirror) and the packaged demo images."""
from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from lalic_core import data


def test_demo_images_are_packaged():
    for name in data.DEMO_IMAGES:
        x = data.demo_image(name, prefer_full=False)
        assert x.shape == (1, 3, 256, 384)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(ValueError, match="unknown demo image"):
        data.demo_image_path("lena")


def test_download_kodak_from_local_mirror(kodak_dir, tmp_path):
    dest = data.download_kodak(tmp_path / "kodak", base_url=kodak_dir.as_uri(), progress=False)
    assert sorted(p.stem for p in dest.glob("*.png")) == list(data.KODAK_NAMES)
    assert data.find_kodak([dest]) == dest
    # A second call keeps the valid files (no re-download): make the mirror unreachable.
    data.download_kodak(dest, base_url=(tmp_path / "nowhere").as_uri(), progress=False)


def test_download_kodak_rejects_wrong_image(kodak_dir, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(kodak_dir, mirror)
    (mirror / "kodim05.png").chmod(0o644)
    Image.new("RGB", (768, 512), (10, 20, 30)).save(mirror / "kodim05.png")
    with pytest.raises(data.DownloadError, match="kodim05.png: pixel hash differs"):
        data.download_kodak(tmp_path / "out", base_url=mirror.as_uri(), progress=False)
    assert not (tmp_path / "out" / "kodim05.png").exists()  # nothing invalid left behind
    with pytest.warns(UserWarning, match="pixel hash"):
        data.download_kodak(tmp_path / "out", base_url=mirror.as_uri(), progress=False,
                            verify=False)


def test_download_kodak_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(data.DownloadError, match="could not download"):
        data.download_kodak(tmp_path / "k", base_url=(tmp_path / "none").as_uri(),
                            progress=False)


def test_list_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        data.list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        data.list_images(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert data.list_images(tmp_path) == [tmp_path / "a.png"]
    assert data.load_image(tmp_path / "a.png").dtype == torch.float32
