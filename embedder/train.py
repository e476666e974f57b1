"""Fine-tuning a sentence-transformers model to be elastic in dimensions and layers (``longvec train``).

Pairs ``(anchor, positive)`` (a query and the passage it should find) train the model with in-batch negatives
(``MultipleNegativesRankingLoss``) wrapped in sentence-transformers' ``Matryoshka2dLoss`` (``loss="2d"``, its
defaults: each step the loss at the last layer and at a random earlier one, at a random prefix size of the ladder,
the earlier layers also pulled towards the last one, as 2DMSE trains) or ``MatryoshkaLoss`` (``loss="dims"``: the
last layer at every prefix size). Anchors and positives get the model's query and document prompts, as longvec
encodes them. Training runs through ``SentenceTransformerTrainer`` (``pip install longvec[train]``) on the
model's device.

The result is an ordinary sentence-transformers directory (usable with ``--model``) holding ``TRAIN_RECORD``:
what it was trained for, which ``matryoshka.native_axes`` reads so that longvec uses the trained prefixes and
depths as they are instead of calibrating them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from longvec.embedder.engine import resolve_device
from longvec.embedder.errors import InvalidSettingError, ModelLoadError
from longvec.embedder.matryoshka import TRAIN_RECORD, allowed_dims
from longvec.embedder.model import resolve_model

TrainLoss = Literal["2d", "dims"]
TRAIN_LOSSES: tuple[TrainLoss, ...] = ("2d", "dims")


@dataclass(frozen=True)
class TrainSettings:
    loss: TrainLoss = "2d"
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_steps: int | None = None  # None: epochs decide
    max_seq_length: int | None = 128  # tokens per text while training (None: the model's); shorter is faster
    seed: int = 0


def check_training_extra() -> None:
    """:class:`InvalidSettingError` naming the extra to install unless the trainer's dependencies import."""
    try:
        import accelerate  # noqa: F401  (the trainer needs it)
        import datasets  # noqa: F401
    except ImportError as exc:
        raise InvalidSettingError(f"training needs the train extra: pip install 'longvec[train]' ({exc})") from exc


def load_for_training(model: str | None, *, allow_download: bool = False, device: str = "auto") -> Any:
    """A fresh ``SentenceTransformer`` of ``model`` (a path, the packaged default, or a hub name), not the shared
    instance :func:`~longvec.embedder.load_embedder` hands out: training changes its weights."""
    from sentence_transformers import SentenceTransformer

    location = resolve_model(model)
    try:
        return SentenceTransformer(location, device=resolve_device(device), local_files_only=not allow_download)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {model!r}: {exc}") from exc


def train(
    model: Any,
    pairs: Sequence[tuple[str, str]],
    output: Path,
    settings: TrainSettings | None = None,
    *,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    base_model: str = "",
    source: str = "",
) -> dict[str, Any]:
    """Fine-tune ``model`` (a ``SentenceTransformer`` from :func:`load_for_training`, changed in place) on
    ``pairs`` and save it to ``output`` (written next to it first, then renamed in: a failed run leaves no
    half-written model). ``query_prompt`` / ``document_prompt`` go before anchors / positives (default: the
    model's own ``query`` / ``document`` prompts); ``base_model`` and ``source`` (where the pairs came from) are
    kept in the record.
    Returns the record saved as ``TRAIN_RECORD``. No model card is written: sentence-transformers' card would hold
    sample training pairs, which may be private."""
    settings = settings or TrainSettings()
    if settings.loss not in TRAIN_LOSSES:
        raise InvalidSettingError(f"loss {settings.loss!r} not in {TRAIN_LOSSES}")
    if len(pairs) < 2:
        raise InvalidSettingError(f"training needs at least 2 pairs (in-batch negatives), got {len(pairs)}")
    if settings.batch_size < 2:
        raise InvalidSettingError(f"batch size must be at least 2, got {settings.batch_size}")
    if not (settings.epochs > 0 and settings.learning_rate > 0):
        raise InvalidSettingError("epochs and learning rate must be positive")
    check_training_extra()
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    try:  # sentence-transformers 6 moved these; 5 has them only at the old place
        from sentence_transformers.sentence_transformer import losses
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:
        from sentence_transformers import losses  # type: ignore[no-redef]
        from sentence_transformers.training_args import BatchSamplers  # type: ignore[no-redef]
    import torch
    import transformers

    own = model.prompts or {}
    query_prompt = own.get("query", "") if query_prompt is None else query_prompt
    document_prompt = own.get("document", "") if document_prompt is None else document_prompt
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise InvalidSettingError(f"{output} exists and is not empty: choose a new directory for the trained model")
    full_dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    dims = sorted(allowed_dims(full_dim), reverse=True)
    base = losses.MultipleNegativesRankingLoss(model)
    if settings.loss == "2d":
        loss = losses.Matryoshka2dLoss(model, base, matryoshka_dims=dims)
    else:
        loss = losses.MatryoshkaLoss(model, base, matryoshka_dims=dims)
    dataset = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    saved_length = model.max_seq_length
    if settings.max_seq_length is not None:
        model.max_seq_length = min(settings.max_seq_length, saved_length)
    on_gpu = model.device.type == "cuda"  # the device the model was loaded on (`load_for_training`)
    prompts = {column: prompt for column, prompt in (("anchor", query_prompt), ("positive", document_prompt)) if prompt}
    warmup = (
        {"warmup_steps": settings.warmup_ratio}  # transformers 5 reads a fraction here (warmup_ratio is deprecated)
        if int(transformers.__version__.split(".")[0]) >= 5
        else {"warmup_ratio": settings.warmup_ratio}
    )
    try:
        args = SentenceTransformerTrainingArguments(
            output_dir=str(work / "checkpoints"),
            num_train_epochs=settings.epochs,
            max_steps=settings.max_steps if settings.max_steps is not None else -1,
            per_device_train_batch_size=min(settings.batch_size, len(pairs)),
            learning_rate=settings.learning_rate,
            **warmup,
            seed=settings.seed,
            data_seed=settings.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,  # a duplicate in a batch would be its own false negative
            bf16=on_gpu and torch.cuda.is_bf16_supported(),
            use_cpu=not on_gpu,
            prompts=prompts or None,
            save_strategy="no",
            report_to="none",
            logging_steps=50,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        result = trainer.train()
        layers = _layer_count(model)
        record = {
            "base_model": base_model,
            "source": source,
            "loss": settings.loss,
            "axes": ["dims", "layers"] if settings.loss == "2d" else ["dims"],
            "dims": sorted(dims),
            "layers": layers,
            "pairs": len(pairs),
            "steps": int(result.global_step),
            "train_loss": float(result.training_loss),
            "prompts": prompts,
            "settings": asdict(settings),
            "versions": {"sentence-transformers": _version("sentence-transformers"), "torch": torch.__version__},
        }
        model.max_seq_length = saved_length  # the saved model reads as much as it did before
        model.save(str(work / "model"), create_model_card=False)
        (work / "model" / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if output.exists():
            output.rmdir()  # checked empty above
        os.replace(work / "model", output)
    finally:
        model.max_seq_length = saved_length
        shutil.rmtree(work, ignore_errors=True)
    return record


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _layer_count(model: Any) -> int | None:
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    return getattr(config, "num_hidden_layers", None)
