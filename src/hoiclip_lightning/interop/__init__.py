"""Interoperability with the reference HOICLIP and GEN-VLKT code: converting their released checkpoints."""

from .genvlkt_official import (
    convert_genvlkt_checkpoint,
    convert_genvlkt_state_dict,
    genvlkt_to_official,
    infer_genvlkt_config,
    load_genvlkt_state_dict,
)
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
    "convert_genvlkt_checkpoint",
    "convert_genvlkt_state_dict",
    "convert_official_checkpoint",
    "convert_official_state_dict",
    "genvlkt_to_official",
    "infer_genvlkt_config",
    "infer_net_config",
    "load_genvlkt_state_dict",
    "load_official_state_dict",
    "official_to_ours",
    "ours_to_official",
    "read_official_checkpoint",
    "to_official_state_dict",
]
