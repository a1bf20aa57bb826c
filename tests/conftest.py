import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
SHARED_DATA = Path(os.environ.get("BATCHMASK_SHARED_DATA", REPO.parent / "shared" / "data"))

needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "kaggle_andrewmvd_facemask").is_dir(),
    reason=f"real photos not available: {SHARED_DATA} is absent (it is present in CI)",
)


def batchmask(*args, cwd=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "batchmask", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, **kw,
    )


def unprivileged(*args) -> list[str]:
    """The CLI's command line for a user whom file permissions bind: root ignores them, so as root
    it runs under capsh without the capabilities that override them (skipped where capsh is not
    installed); `exec` keeps the CLI's pid, so signals reach it."""
    command = [sys.executable, "-m", "batchmask", *map(str, args)]
    if os.geteuid() != 0:
        return command
    capsh = shutil.which("capsh")
    if capsh is None:
        pytest.skip("root ignores file permissions, and capsh (Debian libcap2-bin) is not installed to drop that")
    import shlex

    return [capsh, "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", "exec " + shlex.join(command)]


def batchmask_unprivileged(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(unprivileged(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout)


def astronaut() -> np.ndarray:
    return np.asarray(Image.open(SAMPLES / "astronaut.jpg").convert("RGB"))


def jpeg_bytes(rgb: np.ndarray, orientation: int = 1, quality: int = 90) -> bytes:
    im = Image.fromarray(rgb)
    buf = io.BytesIO()
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    else:
        im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
def photo_tree(tmp_path) -> Path:
    """A small input tree: the shipped samples in several formats, nested folders and broken files."""
    root = tmp_path / "incoming"
    (root / "cam1" / "day2").mkdir(parents=True)
    shutil.copy(SAMPLES / "astronaut.jpg", root / "astronaut.jpg")
    shutil.copy(SAMPLES / "masks" / "astronaut_surgical.jpg", root / "cam1" / "surgical.JPG")
    shutil.copy(SAMPLES / "chelsea.jpg", root / "cam1" / "day2" / "cat.jpeg")
    img = Image.open(SAMPLES / "masks" / "astronaut_cloth.jpg")
    img.save(root / "cam1" / "cloth.png")
    img.resize((256, 256)).save(root / "cam1" / "day2" / "small.webp")
    frames = [img.resize((200, 200)), Image.new("RGB", (200, 200), "white")]
    frames[0].save(root / "cam1" / "anim.GIF", save_all=True, append_images=frames[1:], duration=100)
    img.save(root / "cam1" / "scan.tiff")
    Image.open(SAMPLES / "chelsea.jpg").save(root / "cat.bmp")
    (root / "broken").mkdir()
    (root / "broken" / "empty.jpg").write_bytes(b"")
    (root / "broken" / "truncated.jpg").write_bytes((SAMPLES / "astronaut.jpg").read_bytes()[:3000])
    (root / "broken" / "notes.jpg").write_text("<html>not a photo</html>")
    (root / "readme.txt").write_text("not an image name: ignored")
    return root
