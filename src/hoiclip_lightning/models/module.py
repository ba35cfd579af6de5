"""HOICLIPModule: the LightningModule that trains and evaluates :class:`HOICLIP`.

It is the one place that joins the model, the matcher/criterion, the post-processor, the training-free
enhancement and the metrics. Everything is configured by typed arguments (read by LightningCLI):

.. code-block:: yaml

    model:
      class_path: hoiclip_lightning.models.HOICLIPModule
      init_args:
        net: {backbone: resnet50, clip_model: ViT-B-32, num_queries: 64}
        weights: {clip_pretrained: openai, detr_checkpoint: params/detr-r50-e632da11.pth}
        optimizer: {lr: 1.0e-4, lr_backbone: 1.0e-5, lr_drop_epochs: [60]}

``vocabulary`` and ``zero_shot`` are linked from the datamodule by the CLI; from Python pass them
explicitly (they must match the datamodule's, which is checked at ``setup``). ``weights`` (the files the
network reads when it is built) is not saved in the hyper-parameters: every weight is in the checkpoint's
state dict, so ``load_from_checkpoint`` rebuilds the architecture and reads no file.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from ..errors import CheckpointError, ConfigurationError, NonFiniteLossError
from ..metrics.report import write_per_class_ap
from ..structures import HOIBatch, HOIPrediction
from ..vocabulary import HOIVocabulary
from .config import HOICLIPConfig, LossConfig, OptimizerConfig, PostProcessConfig, WeightSources
from .guard import (
    all_finite,
    batch_tensors,
    describe,
    non_finite_names,
    optimizer_state_tensors,
    output_tensors,
)
from .label_space import VOCABULARY_KEYS, checkpoint_vocabulary, remap_vocabulary_rows, vocabulary_row_ids

__all__ = ["HOICLIPModule", "NonFiniteLossError"]  # the error lives in errors.py; imported here too

log = logging.getLogger(__name__)

# the hyper-parameters saved in checkpoints hold these dataclasses; allow-listing them lets
# `HOICLIPModule.load_from_checkpoint` work with torch.load's default `weights_only=True`
torch.serialization.add_safe_globals([HOICLIPConfig, LossConfig, OptimizerConfig, PostProcessConfig])


class HOICLIPModule(L.LightningModule):
    """Train, validate, test and predict with HOICLIP.

    Args:
        vocabulary: built-in vocabulary name (``hico_det``, ``vcoco``) or a vocabulary JSON path (``hoiclip``
            sets it from the data section).
        zero_shot: zero-shot split name of the vocabulary (``default`` = fully supervised; ``hoiclip`` sets it
            from the data section).
        net: architecture (:class:`HOICLIPConfig`).
        weights: pretrained weights read when the network is built (:class:`WeightSources`: CLIP, DETR
            checkpoint, verb file); ``None`` reads nothing. Not a hyper-parameter: a checkpoint rebuilds the
            network without them and takes every weight from its state dict.
        loss: matching costs and loss weights (:class:`LossConfig`).
        postprocess: evaluation scoring, NMS and training-free enhancement (:class:`PostProcessConfig`).
        optimizer: AdamW groups and step schedule (:class:`OptimizerConfig`).
        metric_protocol: ``official`` (HICO-DET MATLAB rules, paper figures) or ``reference``
            (the reference repository's python evaluator).
        rare_from_training_file: take the rare split from the training annotation file in use (as the
            reference does for fractional runs) instead of the vocabulary's fixed rare list.
        per_class_ap_dir: where test runs write ``per_class_ap.csv`` and the AP-vs-frequency plot;
            ``None`` uses the trainer's log directory.
        skip_non_finite_steps: how many batches with a non-finite value (in the batch, the outputs, the
            loss or the gradients) may be skipped before the run stops with :class:`NonFiniteLossError`;
            a skipped batch makes no update (with gradient accumulation: its whole accumulation window),
            is logged as a warning naming its images, and counted in ``train/non_finite_skips``. ``0``
            (default): stop at the first one.

    Non-finite guard: every training step checks the batch, the model outputs (before the Hungarian
    matcher) and the loss; every optimizer step checks the gradients first (unless a ``16-mixed``
    gradient scaler handles them); under DDP the decision is shared by all processes. A checkpoint whose
    parameters or optimizer state are not finite is never written (:meth:`on_save_checkpoint` raises) nor
    loaded (:meth:`on_load_checkpoint` raises :class:`~hoiclip_lightning.errors.CheckpointError`).
    """

    def __init__(
        self,
        vocabulary: str = "hico_det",
        zero_shot: str = "default",
        net: HOICLIPConfig | None = None,
        weights: WeightSources | None = None,
        loss: LossConfig | None = None,
        postprocess: PostProcessConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        metric_protocol: Literal["official", "reference"] = "official",
        rare_from_training_file: bool = False,
        per_class_ap_dir: str | None = None,
        skip_non_finite_steps: int = 0,
    ) -> None:
        super().__init__()
        self.net_config = net or HOICLIPConfig()
        self.loss_config = loss or LossConfig()
        self.postprocess_config = postprocess or PostProcessConfig()
        self.optimizer_config = optimizer or OptimizerConfig()
        self.save_hyperparameters(ignore=["weights"])
        self.vocabulary = HOIVocabulary.resolve(vocabulary)
        self.zero_shot = zero_shot
        self.metric_protocol = metric_protocol
        self.rare_from_training_file = rare_from_training_file
        self.per_class_ap_dir = per_class_ap_dir
        if skip_non_finite_steps < 0:
            raise ConfigurationError(f"skip_non_finite_steps must be >= 0, got {skip_non_finite_steps}")
        self.skip_non_finite_steps = skip_non_finite_steps
        self.non_finite_skips = 0  # skipped batches so far (stored in checkpoints)
        self._window_files: list[str] = []  # images of the batches accumulated since the last optimizer step
        self._window_skipped = False  # a batch of the current accumulation window was skipped

        self.model = self.build_model(weights)
        self._record_resolved_architecture()
        self._build_label_space_parts()
        self.hoi_train_counts: torch.Tensor | None = None

    def _record_resolved_architecture(self) -> None:
        """Store in ``net`` (and the saved hyper-parameters) what the weights decided: the CLIP activation.

        ``clip_quick_gelu: null`` lets the weights choose (QuickGELU for OpenAI's); a checkpoint is later
        rebuilt without reading those weights (``weights`` is not a hyper-parameter; the state dict holds
        them), so the choice must travel with it.
        """
        resolved = getattr(getattr(self.model, "clip", None), "quick_gelu", None)
        if getattr(self.net_config, "clip_quick_gelu", False) is None and resolved is not None:
            self.net_config = dataclasses.replace(self.net_config, clip_quick_gelu=bool(resolved))
            self.model.config = self.net_config
            self.hparams["net"] = self.net_config

    def build_model(self, weights: WeightSources | None = None) -> torch.nn.Module:
        """The network, from ``self.vocabulary``, ``self.zero_shot``, ``self.net_config`` and the files of
        ``weights`` (a subclass such as :class:`~hoiclip_lightning.models.GENVLKTModule` builds another one)."""
        from .hoiclip import HOICLIP

        return HOICLIP(self.vocabulary, zero_shot=self.zero_shot, config=self.net_config, weights=weights)

    def _build_label_space_parts(self) -> None:
        """Criterion, post-processor and metrics for the current vocabulary and zero-shot split."""
        from ..metrics import VCOCORoleAP
        from .criterion import SetCriterion
        from .postprocess import HOIPostProcessor

        self.criterion = SetCriterion(
            num_obj_classes=self.vocabulary.num_objects, config=self.loss_config, aux_loss=self.net_config.aux_loss
        )
        pp = self.postprocess_config
        all_ids = list(range(self.vocabulary.num_hois))
        self.postprocessor = HOIPostProcessor(
            hoi_ids=all_ids,
            hoi_to_object=self.vocabulary.hoi_to_object(),
            hoi_to_verb=self.vocabulary.hoi_to_verb(),
            topk=pp.topk,
            score_mode=pp.score_mode,
            object_score=pp.object_score,
            use_nms=pp.use_nms,
            nms_threshold=pp.nms_threshold,
            nms_alpha=pp.nms_alpha,
            nms_beta=pp.nms_beta,
        )
        rare = list(self.vocabulary.rare_hois)
        self.val_metric = self._new_metric(rare)
        self.test_metric = self._new_metric(rare)
        self.use_tfe = pp.tfe and self.net_config.clip_model is not None
        self.val_metric_tfe = self._new_metric(rare) if self.use_tfe else None
        self.test_metric_tfe = self._new_metric(rare) if self.use_tfe else None
        # V-COCO-style vocabularies (roles without object) also get the role AP of Scenario 1 and 2
        has_roles = self.vocabulary.no_object_index is not None
        self.val_role_metric = VCOCORoleAP(self.vocabulary) if has_roles else None
        self.test_role_metric = VCOCORoleAP(self.vocabulary) if has_roles else None

    def _new_metric(self, rare: list[int]) -> Any:
        """A fresh HICO-DET metric for the current vocabulary (a method, not a lambda: the module pickles
        for ``ddp_spawn`` and multiprocessing)."""
        from ..metrics import HICODetMAP

        return HICODetMAP(
            num_hois=self.vocabulary.num_hois,
            protocol=self.metric_protocol,
            rare_hois=rare,
            unseen_hois=self.vocabulary.unseen_hois(self.zero_shot) or None,
            hoi_to_object=self.vocabulary.hoi_to_object().tolist(),
        )

    # ------------------------------------------------------------------ open vocabulary
    def set_vocabulary(self, vocabulary: str | Path | HOIVocabulary, zero_shot: str | None = None) -> None:
        """Switch the label space without retraining (see :meth:`HOICLIP.set_vocabulary` for the rules).

        The text-derived classifiers are rebuilt from CLIP text embeddings, classes shared with the current
        vocabulary keep their (trained) rows, and the criterion, post-processor and metrics follow the new
        vocabulary. A checkpoint saved afterwards stores the new vocabulary.

        Args:
            vocabulary: built-in name, vocabulary JSON path, or an :class:`HOIVocabulary`.
            zero_shot: split of the new vocabulary; ``None``: the current split if the new vocabulary
                defines it, else ``default``.

        Example:
            >>> module = HOICLIPModule.load_from_checkpoint("last.ckpt")  # doctest: +SKIP
            >>> module.set_vocabulary("my_vocab.json")  # doctest: +SKIP
        """
        vocab = HOIVocabulary.resolve(vocabulary)
        if zero_shot is None:
            zero_shot = self.zero_shot if self.zero_shot in vocab.zero_shot_unseen else "default"
        self.model.set_vocabulary(vocab, zero_shot)
        self.vocabulary, self.zero_shot = vocab, zero_shot
        self.hparams["zero_shot"] = zero_shot
        if not isinstance(vocabulary, HOIVocabulary):
            self.hparams["vocabulary"] = str(vocabulary)
        self.hoi_train_counts = None
        device = self.model.logit_scale.device
        self._build_label_space_parts()
        for part in (self.criterion, self.postprocessor):
            part.to(device)

    def _adapt_checkpoint_vocabulary(self, checkpoint: dict[str, Any]) -> None:
        """Make a checkpoint trained on another label space load into this module (open vocabulary).

        The module's vocabulary (the one asked for at construction, e.g. ``load_from_checkpoint(path,
        vocabulary=...)`` or the CLI's ``--data.init_args.vocabulary``) wins: the vocabulary-dependent
        tensors of ``checkpoint["state_dict"]`` are rewritten in place to its shapes, keeping the stored rows
        of classes present in both (see :func:`~hoiclip_lightning.models.label_space.remap_vocabulary_rows`).
        When the construction asked for the same vocabulary spec as the checkpoint records but its label
        space differs (a vocabulary switched with :meth:`set_vocabulary`, or an edited JSON file), the
        module adopts the stored vocabulary instead.
        """
        stored = checkpoint.get("hoiclip_vocabulary")
        try:  # note: load_from_checkpoint's kwargs are merged into the stored hyper-parameters
            old_vocab, old_zero_shot = checkpoint_vocabulary(checkpoint)
            old_train = old_vocab.seen_hois(old_zero_shot)
        except Exception as err:  # noqa: BLE001 - without a readable vocabulary the state dict is used as is
            log.warning("checkpoint vocabulary unreadable (%s); loading the state dict unchanged", err)
            return

        def label_space(vocab: HOIVocabulary, train: list[int]) -> tuple:
            return list(vocab.objects), list(vocab.verbs), list(vocab.hois), list(train)

        mine = label_space(self.vocabulary, self.model.train_hoi_ids)
        theirs = label_space(old_vocab, old_train)
        if mine == theirs:
            return
        spec = checkpoint.get("hoiclip_vocabulary_spec")
        same_request = (stored is not None and spec is not None and spec == self.hparams.get("vocabulary")
                        and old_zero_shot == self.zero_shot)
        if same_request:
            rank_zero_info(f"checkpoint stores vocabulary {old_vocab.name!r} ({old_vocab.num_hois} HOIs) for the "
                           f"requested spec {spec!r}; adopting it")
            self.set_vocabulary(old_vocab, old_zero_shot)
            return
        rank_zero_info(
            f"checkpoint vocabulary {old_vocab.name!r} ({old_vocab.num_hois} HOIs, split {old_zero_shot!r}) differs "
            f"from the requested {self.vocabulary.name!r} ({self.vocabulary.num_hois} HOIs, split {self.zero_shot!r}); "
            "rebuilding the text classifiers (shared classes keep their trained rows)"
        )
        state = checkpoint["state_dict"]
        prefix = "model."
        # new classes are embedded with the checkpoint's CLIP (it differs from the constructed one when CLIP
        # was fine-tuned or randomly initialised); the full state dict is loaded again right after this hook
        clip_state = {k[len(prefix + "clip."):]: v for k, v in state.items() if k.startswith(prefix + "clip.")}
        if clip_state:
            self.model.clip.load_state_dict(clip_state, strict=False)
        own = {prefix + k: v for k, v in
               self.model.vocabulary_tensors(self.vocabulary, self.model.train_hoi_ids).items()}
        merged = remap_vocabulary_rows(
            state, vocabulary_row_ids(old_vocab, old_train), own,
            vocabulary_row_ids(self.vocabulary, self.model.train_hoi_ids), prefix=prefix,
        )
        for key in [k for k in state if k.startswith(prefix) and k[len(prefix):] in VOCABULARY_KEYS]:
            if key not in merged:
                del state[key]  # e.g. the zero-shot evaluation head of a split this module does not use
        state.update(merged)
        checkpoint["hoiclip_vocabulary"] = self.vocabulary.to_dict()

    # ------------------------------------------------------------------ set-up
    def check_clip_image_size(self, datamodule: object) -> None:
        """Refuse a datamodule whose CLIP view is not the size the CLIP image tower takes.

        Called at ``setup`` and by the CLI right after building model and data, so a wrong
        ``clip_image_size`` stops the run before the first step (it would otherwise fail there with a
        tensor-shape error in the CLIP positional embedding).

        Args:
            datamodule: anything with ``hparams["clip_image_size"]`` (an ``HOIDataModule``); other
                objects are not checked.

        Raises:
            ConfigurationError: naming both sizes and the setting to change.
        """
        hparams = getattr(datamodule, "hparams", None)
        size = hparams.get("clip_image_size") if isinstance(hparams, dict) else None
        want = self.model.clip.image_size
        if size is not None and int(size) != want:
            raise ConfigurationError(
                f"data clip_image_size = {size}, but the CLIP model {self.model.clip.model_name!r} takes "
                f"{want} x {want} px images; set data.init_args.clip_image_size: {want}"
            )

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        dm_vocab = getattr(dm, "vocabulary", None)
        if dm_vocab is not None and dm_vocab.hois != self.vocabulary.hois:
            raise ConfigurationError(
                f"the datamodule's vocabulary {dm_vocab.name!r} ({dm_vocab.num_hois} HOIs) differs from the model's "
                f"{self.vocabulary.name!r} ({self.vocabulary.num_hois} HOIs); set the same `vocabulary` for data and "
                "model"
            )
        dm_zero_shot = getattr(dm, "zero_shot", self.zero_shot)
        if dm_zero_shot != self.zero_shot:
            raise ConfigurationError(
                f"the datamodule's zero_shot {dm_zero_shot!r} differs from the model's {self.zero_shot!r}"
            )
        self.check_clip_image_size(dm)
        try:
            counts = dm.hoi_train_counts
        except (AttributeError, RuntimeError):
            counts = None
        if counts is not None:
            self.hoi_train_counts = torch.as_tensor(counts)
        if self.rare_from_training_file:
            rare = list(dm.rare_hoi_ids_from_train) if counts is not None else list(self.vocabulary.rare_hois)
            self.val_metric = self._new_metric(rare)
            self.test_metric = self._new_metric(rare)
            if self.use_tfe:
                self.val_metric_tfe = self._new_metric(rare)
                self.test_metric_tfe = self._new_metric(rare)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: HOIBatch, all_classes: bool | None = None):
        return self.model(batch.images, batch.pixel_mask, batch.clip_images, all_classes=all_classes)

    def training_step(self, batch: HOIBatch, batch_idx: int) -> torch.Tensor:
        files = [t.file_name for t in batch.targets]
        self._window_files.extend(files)
        # the guard: nothing non-finite reaches the matcher (its cost matrix would fail) or the loss
        problem, can_skip = None, True
        loss = None
        outputs = self(batch, all_classes=False)
        inputs = batch_tensors(batch)
        bad = non_finite_names(inputs + output_tensors(outputs))  # one host sync for both
        input_names = {name for name, _ in inputs}
        bad_inputs = [name for name in bad if name in input_names]
        bad_outputs = [name for name in bad if name not in input_names]
        if bad_inputs:
            problem = f"non-finite values in the batch ({describe(bad_inputs)})"
        elif bad_outputs:
            problem = f"non-finite model outputs ({describe(bad_outputs)})"
            bad_params = non_finite_names(self.named_parameters())
            if bad_params:  # an earlier update overflowed: skipping cannot help
                problem += f"; the parameters are already non-finite ({describe(bad_params)})"
                can_skip = False
        else:
            losses = self.criterion(outputs, batch.targets)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                bad = {k: float(v.detach()) for k, v in losses.items() if v.numel() == 1 and not torch.isfinite(v)}
                problem = f"non-finite training loss {bad}"
        if self._world_size() > 1:  # one decision for all processes, so none waits for the others in backward
            if self.trainer.strategy.reduce_boolean_decision(problem is not None, all=False) and problem is None:
                problem = "a non-finite value on another process"
        if problem is not None or loss is None:
            self._non_finite(problem or "non-finite value", files, "images in the batch", can_skip)
            self._window_skipped = True
            # a zero loss that reaches every trainable parameter: backward (and DDP's gradient reduction) run
            # as usual and the update is dropped in on_before_optimizer_step
            return torch.stack([p.reshape(-1)[0] for p in self.parameters() if p.requires_grad]).sum() * 0.0
        bs = len(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict(
            {f"train/{k}": v for k, v in losses.items() if k != "loss" and not k[-2:-1] == "_" and v.numel() == 1},
            batch_size=bs,
        )
        if self.skip_non_finite_steps:
            self.log("train/non_finite_skips", float(self.non_finite_skips), batch_size=bs)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Check the (accumulated, unclipped) gradients; drop the update of a window with a skipped batch."""
        files, self._window_files = self._window_files, []
        skipped, self._window_skipped = self._window_skipped, False
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not skipped and not self._grad_scaler_active() and not all_finite(grads):
            names = [n for n, p in self.named_parameters() if p.grad is not None]
            bad = non_finite_names((n, p.grad) for n, p in self.named_parameters() if p.grad is not None)
            self._non_finite(f"non-finite gradients ({len(bad)} of {len(names)} parameters: {describe(bad)})",
                             files, "images of the accumulated batches", can_skip=True)
            skipped = True
        if skipped:
            optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are left alone by the step

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _grad_scaler_active(self) -> bool:
        """``16-mixed`` precision: the gradient scaler skips steps with infinite gradients by design."""
        return self._trainer is not None and getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def on_fit_start(self) -> None:
        self._window_files, self._window_skipped = [], False

    def _non_finite(self, problem: str, files: list[str], what: str, can_skip: bool) -> None:
        """Skip (counted, logged) while the ``skip_non_finite_steps`` budget lasts, else raise."""
        where = f"epoch {self.current_epoch}, step {self.global_step}"
        if can_skip and self.non_finite_skips < self.skip_non_finite_steps:
            self.non_finite_skips += 1
            log.warning("%s at %s; %s: %s. Skipped (%d of %d allowed skips used).", problem, where, what, files,
                        self.non_finite_skips, self.skip_non_finite_steps)
            return
        budget = (f" ({self.non_finite_skips} of {self.skip_non_finite_steps} allowed skips already used)"
                  if self.skip_non_finite_steps else "")
        raise NonFiniteLossError(
            f"{problem} at {where}; {what}: {files}{budget}. No update was made with them; lower the learning "
            "rate or check these images."
        )

    def _enhanced_scores(self, outputs) -> torch.Tensor | None:
        """HOI probabilities after the training-free enhancement, or None when it is off or CLIP is absent."""
        if not self.use_tfe or outputs.clip_logits is None:
            return None
        from .enhancement import training_free_enhancement

        pp = self.postprocess_config
        return training_free_enhancement(outputs.hoi_logits.float().sigmoid(), outputs.clip_logits.float(),
                                         pp.tfe_topk, pp.tfe_weight, pp.tfe_mode)

    def _postprocess(self, outputs, batch: HOIBatch, hoi_scores: torch.Tensor | None = None) -> list[HOIPrediction]:
        orig_sizes = torch.stack([t.orig_size for t in batch.targets]).to(outputs.sub_boxes.device)
        image_ids = [int(t.image_id) for t in batch.targets]
        return self.postprocessor(outputs, orig_sizes, image_ids, hoi_scores=hoi_scores)

    def _eval_step(self, batch: HOIBatch, metric, metric_tfe, role_metric=None) -> list[HOIPrediction]:
        outputs = self(batch, all_classes=True)
        preds = self._postprocess(outputs, batch)
        gts = [t.gt for t in batch.targets]
        if all(g is not None for g in gts):
            metric.update(preds, gts)
            if role_metric is not None:
                role_metric.update(preds, gts)
            enhanced = self._enhanced_scores(outputs) if metric_tfe is not None else None
            if enhanced is not None:
                metric_tfe.update(self._postprocess(outputs, batch, enhanced), gts)
        return preds

    def validation_step(self, batch: HOIBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metric, self.val_metric_tfe, self.val_role_metric)

    def test_step(self, batch: HOIBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metric, self.test_metric_tfe, self.test_role_metric)

    def predict_step(self, batch: HOIBatch, batch_idx: int, dataloader_idx: int = 0) -> list[HOIPrediction]:
        outputs = self(batch, all_classes=True)
        return self._postprocess(outputs, batch, self._enhanced_scores(outputs))

    # ------------------------------------------------------------------ metric logging
    def _log_metric(self, metric, prefix: str) -> dict[str, torch.Tensor]:
        result = metric.compute()
        scalars = {f"{prefix}/{k}": v for k, v in result.items() if torch.is_tensor(v) and v.numel() == 1}
        self.log_dict(scalars, sync_dist=False)
        metric.reset()
        return result

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_metric, "val")
        if self.val_role_metric is not None:
            self._log_metric(self.val_role_metric, "val")
        if self.val_metric_tfe is not None:
            self._log_metric(self.val_metric_tfe, "val/tfe")

    def on_test_epoch_end(self) -> None:
        result = self._log_metric(self.test_metric, "test")
        if self.test_role_metric is not None:
            self._log_metric(self.test_role_metric, "test")
        if self.test_metric_tfe is not None:
            self._log_metric(self.test_metric_tfe, "test/tfe")
        if self.trainer.is_global_zero and "ap_per_class" in result:
            self._write_per_class_ap(result["ap_per_class"].detach().cpu())

    def _write_per_class_ap(self, ap: torch.Tensor) -> None:
        out_dir = Path(self.per_class_ap_dir or (self.trainer.log_dir or "."))
        out_dir.mkdir(parents=True, exist_ok=True)
        counts = self.hoi_train_counts
        path = write_per_class_ap(out_dir / "per_class_ap.csv", self.vocabulary, ap.tolist(),
                                  unseen_hois=self.vocabulary.unseen_hois(self.zero_shot),
                                  train_counts=None if counts is None else counts.tolist())
        rank_zero_info(f"per-class AP written to {path}")
        if counts is not None:
            try:
                self._plot_ap_vs_count(ap, counts, out_dir / "ap_vs_train_instances.png")
            except Exception as err:  # plotting is a convenience; never fail a test run over it
                log.warning("could not draw the AP plot: %s", err)

    def _plot_ap_vs_count(self, ap: torch.Tensor, counts: torch.Tensor, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        keep = ~torch.isnan(ap)
        ax.scatter((counts[keep].float() + 1).numpy(), ap[keep].numpy(), s=8, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("training instances of the class + 1")
        ax.set_ylabel("AP (%)")
        ax.set_title("Per-class AP against training frequency")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):  # e.g. WandbLogger
                try:
                    logger.log_image(key="test/ap_vs_train_instances", images=[str(path)])
                except Exception as err:
                    log.debug("logger %s could not take the image: %s", type(logger).__name__, err)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optimizer_config
        groups = self.model.param_groups()
        lrs = {"backbone": cfg.lr_backbone, "clip": cfg.lr_clip, "rest": cfg.lr}
        param_groups = [
            {"params": [p for p in params if p.requires_grad], "lr": lrs[name], "name": name}
            for name, params in groups.items()
        ]
        param_groups = [g for g in param_groups if g["params"]]
        optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.lr_drop_epochs,
                                                         gamma=cfg.lr_drop_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------ checkpoints
    def _non_finite_checkpoint_entries(self, checkpoint: dict[str, Any]) -> list[str]:
        state = checkpoint.get("state_dict") or {}
        params = [name for name, _ in self.named_parameters()]
        named = [(f"state_dict[{name!r}]", state.get(name)) for name in params]
        return non_finite_names(named + optimizer_state_tensors(checkpoint.get("optimizer_states") or []))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # never write non-finite weights or optimizer state (they would replace a good `last.ckpt`)
        bad = self._non_finite_checkpoint_entries(checkpoint)
        if bad:
            raise NonFiniteLossError(
                f"refusing to write a checkpoint at epoch {checkpoint.get('epoch')}, step "
                f"{checkpoint.get('global_step')}: {len(bad)} non-finite entries ({describe(bad)}); the checkpoints "
                "written before are kept. The last optimizer update made the weights non-finite: lower the "
                "learning rate and resume from the last checkpoint."
            )
        checkpoint["hoiclip_non_finite_skips"] = self.non_finite_skips
        # the vocabulary travels inside the checkpoint, so a checkpoint is usable without the data folder
        checkpoint["hoiclip_vocabulary"] = self.vocabulary.to_dict()
        # with the spec and split it was built from (a vocabulary set with `set_vocabulary` is reloaded)
        checkpoint["hoiclip_vocabulary_spec"] = self.hparams.get("vocabulary")
        checkpoint["hoiclip_zero_shot"] = self.zero_shot
        # the global random state (dropout), so `--ckpt_path last` continues the same random sequence; the
        # data order and augmentation are restored by the training loader (data/resumable.py)
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        checkpoint["hoiclip_rng_state"] = rng

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a checkpoint of another label space is adapted to this module's vocabulary before its state
        # dict is loaded (Lightning calls this hook first, in `load_from_checkpoint` and in the trainer)
        bad = self._non_finite_checkpoint_entries({"state_dict": checkpoint.get("state_dict") or {}})
        if bad:
            raise CheckpointError(f"the checkpoint holds {len(bad)} non-finite parameters ({describe(bad)}); "
                                  "it cannot be evaluated or resumed: use an earlier checkpoint")
        self._adapt_checkpoint_vocabulary(checkpoint)
        self.non_finite_skips = int(checkpoint.get("hoiclip_non_finite_skips", 0))
        rng = checkpoint.get("hoiclip_rng_state")
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if rng is None or not fitting:
            return
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"].cpu(), torch.cuda.current_device())
