import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (fakes.py, tiny_models.py)
