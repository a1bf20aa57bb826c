"""batchmask: find every face in batches of photos and say whether each one wears a mask."""

__version__ = "0.1.0"

from .api import MaskDetector, detect  # noqa: E402
from .faces import Faces  # noqa: E402

__all__ = ["Faces", "MaskDetector", "detect", "__version__"]
