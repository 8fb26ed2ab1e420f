"""Masked training: SGD with momentum and a cosine schedule, into a run folder that can resume.

A run folder holds ``config.json``, ``metrics.json`` (per epoch; at the end the FINAL epoch's
``test_accuracy``, never the best; with masks also parameters and multiply-accumulates per
example, dense, masked and compacted), ``masks.safetensors``, ``model.safetensors`` (final
weights with masks made permanent; for a compacted or sparse-kernel run the small format of
:func:`panning.compaction.save_sparse`) and, while the run is going, ``checkpoint.pt``, rewritten
atomically after every epoch. Same seed, same weights on CPU; a resumed run ends where an uninterrupted
one would.

The package's parts: :mod:`~panning.training.config` (what a run is), :mod:`~panning.training.run`
(the run folder and the state its parts share), :mod:`~panning.training.callbacks` (the library's
own parts of training) and :mod:`~panning.training.loop` (the loop that runs them).
"""

from __future__ import annotations

from panning.errors import literal_fields
from panning.training.callbacks import (
    Checkpoints,
    Compaction,
    CostCount,
    EpochLog,
    Export,
    RescaleToFanIn,
    SparseKernels,
    Validation,
    rescale_to_fan_in,
    standard_callbacks,
)
from panning.training.config import (
    LEGACY_TRAINING,
    RESCALES,
    TrainConfig,
    build,
    create_model,
    device_kind,
    lr_factor,
    record_origin,
    resolve_device,
)
from panning.training.loop import (
    SCREENING_FACTS,
    check_single_process_options,
    train,
)
from panning.training.run import (
    CHANGEABLE_ON_RESUME,
    CHECKPOINT,
    Callback,
    EpochEnd,
    EpochRecord,
    Run,
    RunResult,
    TrainingCallback,
    check_out_dir,
    evaluate,
    masks_digest,
    masks_to_resume,
    save_model,
)

__all__ = [
    "CHANGEABLE_ON_RESUME",
    "CHECKPOINT",
    "LEGACY_TRAINING",
    "RESCALES",
    "SCREENING_FACTS",
    "Callback",
    "Checkpoints",
    "Compaction",
    "CostCount",
    "EpochEnd",
    "EpochLog",
    "EpochRecord",
    "Export",
    "RescaleToFanIn",
    "Run",
    "RunResult",
    "SparseKernels",
    "TrainConfig",
    "TrainingCallback",
    "Validation",
    "build",
    "check_out_dir",
    "check_single_process_options",
    "create_model",
    "device_kind",
    "evaluate",
    "literal_fields",
    "lr_factor",
    "masks_digest",
    "masks_to_resume",
    "record_origin",
    "rescale_to_fan_in",
    "resolve_device",
    "save_model",
    "standard_callbacks",
    "train",
]
