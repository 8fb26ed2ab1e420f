"""Checks of a mask file against the command it is given to: the model and data it was screened on."""

from __future__ import annotations

import warnings

from panning import masks as masklib
from panning.errors import UserError


def refuse_other_model(masks: masklib.Masks, model_name: str, path: str) -> None:
    """Refuse masks screened on another registered model: their names can fit it (resnet20's are a
    prefix of resnet32's), and its other layers would then train dense under a sparsity that counts
    only the masked ones.

    Examples:
        >>> refuse_other_model(masklib.Masks(metadata={"model": "lenet5"}), "lenet5", "m.safetensors")
    """
    screened = masks.metadata.get("model")
    if screened is not None and screened != model_name:
        raise UserError(
            f"{path} holds masks of {screened}, not {model_name}; pass --model {screened} or screen "
            f"{model_name} with `panning prune`"
        )


def warn_other_dataset(masks: masklib.Masks, dataset: str) -> None:
    """Warn when the masks were screened on another dataset than the command uses (they fit, and
    can be meant for other data, but usually are not).

    Examples:
        >>> warn_other_dataset(masklib.Masks(metadata={"dataset": "mnist"}), "mnist")
    """
    screened_on = masks.metadata.get("dataset")
    if screened_on is not None and screened_on != dataset:
        warnings.warn(
            f"the masks were screened on {screened_on}, not {dataset}: pass --dataset {screened_on} unless they "
            "are meant for other data",
            stacklevel=2,
        )
