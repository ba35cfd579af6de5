"""Interoperability with the reference HOICLIP code: converting its released checkpoints."""

from .official import (
    ConversionReport,
    convert_official_checkpoint,
    convert_official_state_dict,
    infer_net_config,
    load_official_state_dict,
    official_to_ours,
    ours_to_official,
    read_official_checkpoint,
    to_official_state_dict,
)

__all__ = [
    "ConversionReport",
    "convert_official_checkpoint",
    "convert_official_state_dict",
    "infer_net_config",
    "load_official_state_dict",
    "official_to_ours",
    "ours_to_official",
    "read_official_checkpoint",
    "to_official_state_dict",
]
