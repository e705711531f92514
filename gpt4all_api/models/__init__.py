"""Model files live here (git-ignored *.gguf); the package holds the fetch/convert tooling."""

from pathlib import Path

DEFAULT_CHAT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_EMBEDDING_MODEL_FILE = "all-MiniLM-L6-v2.f16.gguf"
PACKAGE_MODELS_DIR = Path(__file__).resolve().parent
