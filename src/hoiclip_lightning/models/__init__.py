"""HOICLIP and GEN-VLKT model parts: plain ``nn.Module`` building blocks plus the LightningModule wrappers."""

from .config import HOICLIPConfig, LossConfig, OptimizerConfig, PostProcessConfig
from .criterion import SetCriterion
from .detr_checkpoint import export_detector, load_detr_checkpoint
from .enhancement import training_free_enhancement
from .gen_transformer import GENTransformer, GuidedInteractionDecoder
from .genvlkt import GENVLKT, GENVLKTConfig
from .genvlkt_module import GENVLKTModule
from .hoiclip import HOICLIP
from .matcher import HungarianMatcher
from .module import HOICLIPModule
from .postprocess import HOIPostProcessor
from .query_selection import DenseQuerySelection

__all__ = [
    "DenseQuerySelection",
    "GENTransformer",
    "GENVLKT",
    "GENVLKTConfig",
    "GENVLKTModule",
    "GuidedInteractionDecoder",
    "HOICLIP",
    "HOICLIPConfig",
    "HOICLIPModule",
    "HOIPostProcessor",
    "HungarianMatcher",
    "LossConfig",
    "OptimizerConfig",
    "PostProcessConfig",
    "SetCriterion",
    "export_detector",
    "load_detr_checkpoint",
    "training_free_enhancement",
]
