"""GENVLKTModule: :class:`HOICLIPModule`'s training, evaluation and logging with a :class:`GENVLKT` network.

Everything but the network is shared: the matcher and :class:`SetCriterion` (which adds the image-level
mimic loss, ``train/loss_feat_mimic``, because GEN-VLKT's outputs carry ``mimic_features``), the
post-processor, the metrics and the optimiser (its ``clip`` group, at ``lr_clip``, holds the text
classifiers). In YAML:

.. code-block:: yaml

    model:
      class_path: hoiclip_lightning.models.GENVLKTModule
      init_args:
        net: {backbone: resnet50, clip_model: ViT-B-32, num_queries: 64, dec_layers: 3}
        weights: {clip_pretrained: openai, detr_checkpoint: params/detr-r50-e632da11.pth}
        loss: {mimic_loss_coef: 20.0}
        postprocess: {tfe: false}
"""

from __future__ import annotations

from typing import Literal

import torch

from .config import LossConfig, OptimizerConfig, PostProcessConfig, WeightSources
from .genvlkt import GENVLKT, GENVLKTConfig
from .module import HOICLIPModule

# checkpoints store the config dataclass; allow-list it for torch.load(weights_only=True)
torch.serialization.add_safe_globals([GENVLKTConfig])


class GENVLKTModule(HOICLIPModule):
    """Train, validate, test and predict with GEN-VLKT.

    Args:
        vocabulary: built-in vocabulary name or vocabulary JSON path (as for :class:`HOICLIPModule`).
        zero_shot: zero-shot split of the vocabulary.
        net: architecture (:class:`GENVLKTConfig`).
        weights: CLIP weights and DETR checkpoint read when the network is built (:class:`WeightSources`);
            not a hyper-parameter, as for :class:`HOICLIPModule`.
        loss: matching costs and loss weights, ``mimic_loss_coef`` included (:class:`LossConfig`).
        postprocess: evaluation scoring; ``None`` gives the reference's (no training-free enhancement,
            which GEN-VLKT does not have).
        optimizer: AdamW groups and step schedule (:class:`OptimizerConfig`).
        metric_protocol: ``official`` or ``reference`` HICO-DET evaluation.
        rare_from_training_file: rare split from the training annotation file in use.
        per_class_ap_dir: where test runs write ``per_class_ap.csv``.
        skip_non_finite_steps: batches with a non-finite value that may be skipped before the run stops
            (as for :class:`HOICLIPModule`).
    """

    def __init__(
        self,
        vocabulary: str = "hico_det",
        zero_shot: str = "default",
        net: GENVLKTConfig | None = None,
        weights: WeightSources | None = None,
        loss: LossConfig | None = None,
        postprocess: PostProcessConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        metric_protocol: Literal["official", "reference"] = "official",
        rare_from_training_file: bool = False,
        per_class_ap_dir: str | None = None,
        skip_non_finite_steps: int = 0,
    ) -> None:
        super().__init__(
            vocabulary=vocabulary,
            zero_shot=zero_shot,
            net=net or GENVLKTConfig(),
            weights=weights,
            loss=loss,
            postprocess=postprocess or PostProcessConfig(tfe=False),
            optimizer=optimizer,
            metric_protocol=metric_protocol,
            rare_from_training_file=rare_from_training_file,
            per_class_ap_dir=per_class_ap_dir,
            skip_non_finite_steps=skip_non_finite_steps,
        )

    def build_model(self, weights: WeightSources | None = None) -> GENVLKT:
        """A :class:`GENVLKT` for the module's vocabulary, zero-shot split, ``net`` config and weight files."""
        return GENVLKT(self.vocabulary, zero_shot=self.zero_shot, config=self.net_config, weights=weights)
