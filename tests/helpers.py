from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
