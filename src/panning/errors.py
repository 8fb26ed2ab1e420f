"""Errors that mean "the caller asked for something wrong" rather than "the library broke".

The CLI turns these into a one-line message and exit status 2; everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Literal, get_args, get_origin, get_type_hints


class UserError(ValueError):
    """A bad value from the user: the message names the problem and the fix.

    Examples:
        >>> try:
        ...     raise UserError("sparsity 1.5 is outside [0, 1): pass a fraction such as 0.99")
        ... except ValueError as error:
        ...     print(error)
        sparsity 1.5 is outside [0, 1): pass a fraction such as 0.99
    """


class UserTypeError(UserError, TypeError):
    """A value of the wrong type from the user (also a ``TypeError``).

    Examples:
        >>> import panning, torch
        >>> try:
        ...     panning.prune(torch.nn.Linear(2, 2), "0.5", "magnitude")
        ... except TypeError as error:
        ...     print(type(error).__name__)
        UserTypeError
    """


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run folder keeps its last good checkpoint.

    A ``ValueError`` like every :class:`UserError`: the settings (learning rate, warm-up) were
    wrong for this network, and the message says what to try.

    Examples:
        >>> issubclass(TrainingDiverged, ValueError)
        True
    """


def check_module(model: Any, role: str = "model") -> None:
    """Refuse anything but a ``torch.nn.Module`` with a one-line ``TypeError``.

    Examples:
        >>> check_module("lenet5")
        Traceback (most recent call last):
        ...
        panning.errors.UserTypeError: model must be a torch.nn.Module, got str
    """
    from torch import nn

    if not isinstance(model, nn.Module):
        raise UserTypeError(f"{role} must be a torch.nn.Module, got {type(model).__name__}")


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), for a one-line report
    of an error raised deep inside a library.

    Examples:
        >>> first_line(RuntimeError("shapes differ")), first_line(KeyError())
        ('shapes differ', 'KeyError')
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float after checking that it lies in [0, 1).

    Examples:
        >>> check_sparsity(0.99)
        0.99
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise UserTypeError(f"sparsity must be a number in [0, 1), got {type(sparsity).__name__}")
    value = float(sparsity)
    if not 0.0 <= value < 1.0:
        raise UserError(
            f"sparsity {sparsity} is outside [0, 1): it is the fraction of weights removed, e.g. 0.99 keeps 1%"
        )
    return value


def check_positive(name: str, value: object) -> float:
    """Return ``value`` as a float after checking that it is a finite positive number.

    Examples:
        >>> check_positive("temperature", 200)
        200.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserTypeError(f"{name} must be a positive number, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise UserError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def check_count(name: str, value: object) -> int:
    """Return ``value`` as an int after checking that it is a positive whole number (numpy ints too).

    Examples:
        >>> check_count("batch_size", 256)
        256
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_seed(value: object, name: str = "seed") -> int:
    """Return ``value`` after checking that it is an integer a torch generator accepts (0 to 2**63 - 1).

    Examples:
        >>> check_seed(3)
        3
        >>> check_seed(-1)
        Traceback (most recent call last):
        ...
        panning.errors.UserError: seed must be an integer from 0 to 2**63 - 1, got -1
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserTypeError(f"{name} must be an integer from 0 to 2**63 - 1, got {value!r}")
    if not 0 <= int(value) < 2**63:
        raise UserError(f"{name} must be an integer from 0 to 2**63 - 1, got {value!r}")
    return int(value)


def literal_fields(cls: type) -> dict[str, tuple[Any, ...]]:
    """The fields of a dataclass whose type is a ``Literal``, with their allowed values; the one
    place those values are stated, read by validation and by the command line's choices.

    Examples:
        >>> from panning.training import TrainConfig
        >>> literal_fields(TrainConfig)["rescale"]
        ('fan-in', 'none')
    """
    hints = get_type_hints(cls)
    return {f.name: get_args(hints[f.name]) for f in dataclasses.fields(cls) if get_origin(hints[f.name]) is Literal}


def check_literal_fields(config: object) -> None:
    """Refuse a dataclass whose ``Literal`` fields hold a value outside their choices.

    Examples:
        >>> from panning.training import TrainConfig
        >>> check_literal_fields(TrainConfig(rescale="sqrt"))
        Traceback (most recent call last):
        ...
        panning.errors.UserError: unknown rescale 'sqrt'; valid: fan-in, none
    """
    for name, choices in literal_fields(type(config)).items():
        if getattr(config, name) not in choices:
            raise UserError(f"unknown {name} {getattr(config, name)!r}; valid: {', '.join(map(str, choices))}")
