"""Makes the helper modules of this folder importable, here and in the worker processes the
executors start (they inherit this process's import path)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
