"""Where the files shipped inside the package lie: bundled models, judges and stroke paintings."""
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
