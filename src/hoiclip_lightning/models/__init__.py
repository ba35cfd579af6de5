"""HOI detection models: plain ``nn.Module`` blocks, the HOICLIP and GEN-VLKT compositions, LightningModules.

Blocks (each a plain module with typed arguments): :class:`Backbone`, :class:`PositionEmbeddingSine`,
:class:`TransformerEncoder`, :class:`InstanceDecoder`, the interaction decoders
(:class:`CLIPInteractionDecoder`: HOICLIP's retrieval from CLIP tokens; :class:`GuidedInteractionDecoder`:
GEN-VLKT's decoder over the detector memory), :class:`DenseHead` and :class:`DenseQuerySelection` (the
optional dense aids), :class:`MLP` box heads, :func:`text_classifier` heads, :class:`CLIPEncoder`,
:class:`HungarianMatcher`, :class:`SetCriterion` and :class:`HOIPostProcessor`. :class:`HOIModel` composes
the shared ones; :class:`HOICLIP` and :class:`GENVLKT` add their interaction branch. Pretrained weights
(CLIP, DETR, verb file) are a separate argument, :class:`WeightSources`, apart from the architecture configs.
"""

from .backbone import Backbone
from .clip_encoder import CLIPEncoder
from .config import HOICLIPConfig, LossConfig, OptimizerConfig, PostProcessConfig, WeightSources
from .criterion import SetCriterion
from .detr_checkpoint import export_detector, load_detr_checkpoint
from .enhancement import training_free_enhancement
from .gen_transformer import GENTransformer, GuidedInteractionDecoder
from .genvlkt import GENVLKT, GENVLKTConfig
from .genvlkt_module import GENVLKTModule
from .heads import MLP, text_classifier
from .hoi_model import DenseHead, EncodedImage, HOIModel, PairQueries
from .hoiclip import HOICLIP
from .interaction import CLIPInteractionDecoder
from .matcher import HungarianMatcher
from .module import HOICLIPModule
from .position_encoding import PositionEmbeddingSine
from .postprocess import HOIPostProcessor
from .query_selection import DenseQuerySelection
from .transformer import HOITransformer, InstanceDecoder, TransformerEncoder

__all__ = [
    "MLP",
    "Backbone",
    "CLIPEncoder",
    "CLIPInteractionDecoder",
    "DenseHead",
    "DenseQuerySelection",
    "EncodedImage",
    "GENTransformer",
    "GENVLKT",
    "GENVLKTConfig",
    "GENVLKTModule",
    "GuidedInteractionDecoder",
    "HOICLIP",
    "HOICLIPConfig",
    "HOICLIPModule",
    "HOIModel",
    "HOIPostProcessor",
    "HOITransformer",
    "HungarianMatcher",
    "InstanceDecoder",
    "LossConfig",
    "OptimizerConfig",
    "PairQueries",
    "PositionEmbeddingSine",
    "PostProcessConfig",
    "SetCriterion",
    "TransformerEncoder",
    "WeightSources",
    "export_detector",
    "load_detr_checkpoint",
    "text_classifier",
    "training_free_enhancement",
]
