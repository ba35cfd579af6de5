"""hoiclip-lightning: HOICLIP human-object interaction detection as a PyTorch Lightning library."""

from .errors import (
    AnnotationError,
    CheckpointError,
    CheckpointNotFoundError,
    ConfigurationError,
    DatasetNotFoundError,
    HOICLIPError,
    NonFiniteLossError,
)
from .structures import HOIBatch, HOIGroundTruth, HOIOutputs, HOIPrediction, HOITarget, VCOCOGroundTruth
from .vocabulary import HOIVocabulary

__version__ = "0.1.0"

__all__ = [
    "AnnotationError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigurationError",
    "DatasetNotFoundError",
    "HOICLIPError",
    "HOIBatch",
    "HOIGroundTruth",
    "HOIOutputs",
    "HOIPrediction",
    "HOITarget",
    "HOIVocabulary",
    "NonFiniteLossError",
    "VCOCOGroundTruth",
    "__version__",
]
