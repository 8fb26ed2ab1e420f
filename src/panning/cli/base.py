"""The command group, its shared options and one-line error handling."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
import torch

from panning import __version__, models
from panning import data as datasets
from panning.compaction.sparse import Costs
from panning.errors import UserError
from panning.io import os_fault
from panning.screening.multi_index import COMBINATIONS, GRASP_FORMS, NORMALIZATIONS
from panning.screening.pruning import (
    SCREENING_DEFAULTS,
    ScreeningConfig,
    method_names,
    method_option_names,
    prune,
)
from panning.training import (
    TrainConfig,
    literal_fields,
)

F = Callable[..., Any]


def combine_options(*decorators: F) -> Callable[[F], F]:
    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


class _NumberOrNone(click.ParamType):
    name = "number|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a number nor 'none'", param, ctx)


_NUMBER_OR_NONE = _NumberOrNone()


def config_option(field: str, help: str | None = None, **extra: Any) -> F:
    """A ``--field-name`` option for a :class:`TrainConfig` field, its default read from the dataclass
    and, for a ``Literal`` field, its choices from the type.

    Examples:
        >>> config_option("lr").__name__
        'decorator'
    """
    default = getattr(TrainConfig, field)
    choices = literal_fields(TrainConfig).get(field)
    if choices is not None:
        extra.setdefault("type", click.Choice(list(choices)))
    return click.option(f"--{field.replace('_', '-')}", default=default, show_default=True, help=help, **extra)


common_options = combine_options(
    click.option("--model", "model_name", required=True, type=click.Choice(models.names()), help="Model name."),
    click.option("--dataset", required=True, type=click.Choice(datasets.names()), help="Dataset name."),
    config_option("seed", "Seed of the initialisation and sampling.", type=int),
    click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding <dataset>/ folders."),
    config_option("device", "auto, cpu or cuda."),
    config_option(
        "val_size", "Training examples held out for validation (never used for screening or training).", type=int
    ),
    config_option(
        "normalization",
        "standard: the dataset's mean/std; half: mean 0.5, std 0.5.",
    ),
    config_option(
        "init",
        "Initialisation screened and trained: the modules' own (pytorch) or the authors' script's (reference).",
    ),
)

prune_options = combine_options(
    click.option("--method", required=True, type=click.Choice(method_names()), help="Screening method."),
    click.option("--sparsity", required=True, type=float, help="Fraction of weights removed, in [0, 1)."),
    click.option(
        "--iterations",
        type=int,
        help="Pruning steps T (default: 100 for synflow, iter-snip and panning, the agent's own for "
        "rl-panning (20 shipped), else 1).",
    ),
    click.option(
        "--schedule",
        default=SCREENING_DEFAULTS["schedule"],
        show_default=True,
        type=click.Choice(literal_fields(ScreeningConfig)["schedule"]),
    ),
    click.option(
        "--regrowth/--no-regrowth",
        default=SCREENING_DEFAULTS["regrowth"],
        show_default=True,
        help="Let pruned weights come back in later steps (--no-regrowth: monotone masks).",
    ),
    click.option(
        "--samples-per-class",
        type=int,
        help="Examples of each class in a scoring batch (default: the method's, 2 for panning, 10 for the others).",
    ),
    click.option("--temperature", type=float, help="Logit temperature of snip/grasp (defaults 1 and 200)."),
    click.option(
        "--scope",
        default=SCREENING_DEFAULTS["scope"],
        show_default=True,
        type=click.Choice(literal_fields(ScreeningConfig)["scope"]),
    ),
    click.option(
        "--grasp",
        "grasp_form",
        type=click.Choice(list(GRASP_FORMS)),
        help="GraSP score form for grasp/panning: signed θ⊙Hg or the reference's |θ⊙Hg|.",
    ),
    click.option(
        "--index-normalization",
        type=click.Choice(list(NORMALIZATIONS)),
        help="panning: how each index is normalised (default zscore-abs, the reference's).",
    ),
    click.option(
        "--combination",
        type=click.Choice(list(COMBINATIONS)),
        help="panning: additive (default) or multiplicative combination; alone, it picks the paper's table of it.",
    ),
    click.option(
        "--stages",
        help=(
            "panning: 'auto' (default: 'agent-floor' for networks with convolutions, else 'agent'), "
            "'agent', 'agent-floor', 'paper', or a TOML/JSON table file."
        ),
    ),
    click.option(
        "--agent",
        "agent_path",
        type=click.Path(dir_okay=False),
        help="rl-panning: a trained agent (.zip from `panning agent train`; default: the shipped one).",
    ),
    click.option(
        "--option",
        "-O",
        "method_option",
        multiple=True,
        metavar="NAME=VALUE",
        help="Any option of the method, e.g. -O inner_steps=2 for prospr (values read as TOML: 2, 0.5, true, 'x').",
    ),
    click.option("--trace", type=click.Path(dir_okay=False), help="Write a per-step CSV trace of the screening."),
)

train_options = combine_options(
    click.option("--epochs", required=True, type=int, help="Training epochs."),
    config_option("lr", type=float),
    config_option("batch_size", type=int),
    config_option("weight_decay", type=float),
    config_option("momentum", type=float),
    click.option(
        "--augment/--no-augment",
        default=None,
        help="Random crop and flip (default: on for CIFAR and Tiny-ImageNet only).",
    ),
    config_option(
        "warmup_epochs", "Epochs of linear learning-rate warm-up before the cosine schedule (0: none).", type=float
    ),
    config_option(
        "rescale",
        "fan-in: scale each unit's kept weights to its fan-in after masking; none: as initialised.",
    ),
    click.option(
        "--clip-grad-norm",
        default=str(TrainConfig.clip_grad_norm),
        show_default=True,
        type=_NUMBER_OR_NONE,
        help="Clip the gradient's global norm to this value before every step; none: no clipping.",
    ),
    click.option("--compact", is_flag=True, help="Train the compacted model: dead units removed (needs masks)."),
    click.option(
        "--sparse-kernels",
        is_flag=True,
        help="Use sparse linear kernels where timing on this device says they are faster (needs masks).",
    ),
    click.option("--resume", is_flag=True, help="Continue the unfinished run in --out."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
)


def user_errors(function: F) -> F:
    """Decorate a command so that a user mistake or an OS fault ends in one line and exit 2."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except UserError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except BrokenPipeError:  # the reader stopped (`| head`): no error of ours to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            sys.exit(1)
        except OSError as error:  # a fault of the operating system, not of the library: one line too
            click.echo(f"error: {os_fault(error.filename or '?', error, 'use')}", err=True)
            sys.exit(2)

    return wrapper


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    click.echo(f"warning: {message}", err=True)


# click 8.2 and later raise this for a bare group (8.1 printed the help itself).
_NO_ARGS_IS_HELP: type[Exception] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _OneLineErrors(click.Group):
    """A group whose usage errors are one line (click prints usage and a blank line by default)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS_IS_HELP as error:
            context = getattr(error, "ctx", None)
            click.echo(context.get_help() if context is not None else str(error))
            sys.exit(0)  # a bare `panning` or `panning agent` asks for the commands, which is no mistake
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "panning"
            message = " ".join(error.format_message().split())
            click.echo(f"error: {message} (see `{where} --help`)", err=True)
            sys.exit(2)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("aborted: a run continues with --resume, a grid with the same command", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(name="panning", cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="panning")
def cli() -> None:
    """Screen the sparse network worth training, before training."""
    warnings.showwarning = _show_warning


def train_config(model_name: str, dataset: str, seed: int, device: str, **kw: Any) -> TrainConfig:
    """The validated :class:`TrainConfig` of a command's training options."""
    return TrainConfig(
        model=model_name,
        dataset=dataset,
        seed=seed,
        device=device,
        init=kw["init"],
        warmup_epochs=kw["warmup_epochs"],
        rescale=kw["rescale"],
        clip_grad_norm=kw["clip_grad_norm"],
        epochs=kw["epochs"],
        lr=kw["lr"],
        batch_size=kw["batch_size"],
        weight_decay=kw["weight_decay"],
        momentum=kw["momentum"],
        val_size=kw["val_size"],
        normalization=kw["normalization"],
        augment=kw["augment"],
        compact=kw["compact"],
        sparse_kernels=kw["sparse_kernels"],
    ).validate()


# Flags that name a method option (any option also works as -O NAME=VALUE): each sets the option
# of its name, for whichever method takes it.
OPTION_FLAGS = {
    "temperature": ("--temperature", "temperature"),
    "grasp_form": ("--grasp", "grasp"),
    "index_normalization": ("--index-normalization", "normalization"),
    "combination": ("--combination", "combination"),
    "stages": ("--stages", "stages"),
    "agent_path": ("--agent", "agent"),
}


def method_options(kw: dict[str, Any]) -> dict[str, Any]:
    """The method options a command's flags set; a flag the method does not take is a user error.

    Examples:
        >>> method_options({"method": "panning", "combination": "additive"})
        {'combination': 'additive'}
        >>> method_options({"method": "grasp", "grasp_form": "signed"})
        {'absolute': False}
    """
    method = kw["method"]
    accepted = method_option_names(method)
    options: dict[str, Any] = {}
    for key, (flag, option) in OPTION_FLAGS.items():
        value = kw.get(key)
        if value is None:
            continue
        if (method, option) == ("grasp", "grasp"):  # the single index takes the form as its sign
            option, value = "absolute", value == "abs"
        elif accepted is not None and option not in accepted:
            raise UserError(
                f"{flag} is not an option of --method {method} (its options: {', '.join(accepted) or 'none'})"
            )
        options[option] = value
    screening = inspect.signature(prune).parameters
    for text in kw.get("method_option") or ():
        name, value = parse_option(text)
        if name in screening:
            raise UserError(f"{name!r} is a screening setting, not a method option: use --{name.replace('_', '-')}")
        if name in options:
            raise UserError(f"option {name!r} is given twice; give it once")
        options[name] = value
    return options


def parse_option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``--option``, the value read as a TOML value (a bare word as a string).

    Examples:
        >>> parse_option("inner_steps=2"), parse_option("stages=paper"), parse_option("absolute=true")
        (('inner_steps', 2), ('stages', 'paper'), ('absolute', True))
    """
    name, sep, raw = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise UserError(f"--option takes NAME=VALUE, e.g. --option inner_steps=2; got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return name.strip(), value


def architecture(model_name: str, dataset: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """A registered model for a dataset, and the shape of one input.

    Examples:
        >>> architecture("lenet5", "mnist")[1]
        (1, 28, 28)
    """
    spec = datasets.spec(dataset)
    return models.for_dataset(model_name, dataset), (spec.in_channels, spec.image_size, spec.image_size)


def cost_lines(before: Costs, after: Costs) -> str:
    """What compaction saved, as one line."""
    return (
        f"parameters stored: {before.params} -> {after.params} ({before.params / max(after.params, 1):.1f}x fewer); "
        f"MACs per example: {before.macs} -> {after.macs} ({before.macs / max(after.macs, 1):.1f}x fewer)"
    )
