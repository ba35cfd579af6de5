"""The ``hoiclip`` command: a LightningCLI plus a few extra subcommands.

Lightning subcommands (model and datamodule from YAML, subclass mode)::

    hoiclip fit --config configs/quickstart.yaml
    hoiclip test --config configs/quickstart.yaml --ckpt_path runs/quickstart/checkpoints/last.ckpt
    hoiclip fit --config configs/experiments/hico_det.yaml --print_config

Extra subcommands (each has ``--help``)::

    hoiclip synth --out data/synthetic --seed 0 --num-train 400 --num-test 100 --num-val 100
    hoiclip clip-pretrain --out data/clip/hoiclip_small.pt --synthetic 3000
    hoiclip export-detector runs/detector_pretrain/checkpoints/last.ckpt --out data/detector/synthetic_detector.pt
    hoiclip evaluate --predictions results.json --annotations test_hico.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .data.datamodule import HOIDataModule
from .errors import HOICLIPError
from .metrics.report import format_metric_table
from .models.module import HOICLIPModule

log = logging.getLogger(__name__)

__all__ = ["EXTRA_SUBCOMMANDS", "HOICLIPCLI", "format_metric_table", "main"]


def _vocabulary_source(datamodule: HOIDataModule) -> str:
    return datamodule.vocabulary_source


class HOICLIPCLI(LightningCLI):
    """LightningCLI whose model and datamodule are chosen from YAML (``class_path`` + ``init_args``).

    The datamodule's vocabulary and zero-shot split are linked into the model, so a config states them
    once, in the ``data`` section. ``fit`` adds :class:`~hoiclip_lightning.callbacks.NonFiniteLossCheckpoint`
    when the config has none, so a non-finite stop always leaves the last finite state on disk.
    ``test_after_fit: true`` evaluates the best checkpoint (selected on the validation split, or on the test
    split for datasets without one) on the test split when ``fit`` ends and prints the metric table (the
    quickstart uses it). ``test`` prints that table (every ``test/`` metric) instead of Lightning's
    per-metric listing, so each value appears once.

    ``--ckpt_path last`` with no ``last.ckpt`` in the checkpoint folders raises
    :class:`~hoiclip_lightning.errors.CheckpointNotFoundError` (Lightning would warn and start from scratch).
    ``predict --ckpt_path FILE`` takes the evaluation transforms (``test_scale``, ``test_max_size``,
    ``clip_image_size``) from the checkpoint's saved datamodule hyper-parameters, over the config file's
    values, so that it resizes images as the run that wrote the checkpoint evaluated them (and as
    :class:`~hoiclip_lightning.inference.HOIDetector` does); a value given on the command line
    (``--data.init_args.test_scale 512``) wins.
    """

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        # keep the command line: a data value given there is not replaced by the checkpoint's (predict)
        raw = sys.argv[1:] if args is None else args
        self._command_line = [a for a in raw if isinstance(a, str)] if isinstance(raw, (list, tuple)) else []
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after fit, test the best (or last) checkpoint and print the metric table")
        parser.link_arguments("data", "model.init_args.vocabulary", compute_fn=_vocabulary_source,
                              apply_on="instantiate")
        parser.link_arguments("data.init_args.zero_shot", "model.init_args.zero_shot")

    def before_instantiate_classes(self) -> None:
        # `vocabulary: null` means <root>/vocabulary.json if present, else the built-in one of the format;
        # resolve it in the config so the saved config and both hparams name the same label space
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        data = getattr(config, "data", None)
        init = getattr(data, "init_args", None)
        builtin_fallback = False
        if init is not None and getattr(init, "vocabulary", "unset") is None:
            from pathlib import Path

            custom = Path(init.root) / "vocabulary.json"
            builtin_fallback = not custom.is_file()
            init.vocabulary = str(custom) if custom.is_file() else init.dataset_format
        if self.subcommand == "predict" and init is not None:
            self._eval_transforms_from_checkpoint(config.get("ckpt_path"), init, builtin_fallback)

    def _given_on_command_line(self, key: str) -> bool:
        flags = (f"--data.init_args.{key}", f"--data.{key}")
        return any(arg == flag or arg.startswith(flag + "=") for arg in getattr(self, "_command_line", [])
                   for flag in flags)

    def _eval_transforms_from_checkpoint(self, ckpt_path, init, builtin_fallback: bool = False) -> None:
        """``predict``: the checkpoint's test_scale / test_max_size / clip_image_size replace the config's.

        With ``builtin_fallback`` (the config's ``vocabulary: null`` found no ``<root>/vocabulary.json``, as
        when predicting away from the training data) the checkpoint's stored vocabulary is kept for
        :meth:`before_predict`, so that the triplets are named as the checkpoint was trained (as
        ``HOIDetector.from_checkpoint`` does) rather than with the format's built-in classes.
        """
        from pathlib import Path

        self._checkpoint_vocabulary = None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        from .inference.predictor import checkpoint_eval_transforms, load_checkpoint_file
        from .vocabulary import HOIVocabulary

        ckpt = load_checkpoint_file(ckpt_path)
        stored = ckpt.get("hoiclip_vocabulary")
        if builtin_fallback and stored is not None:
            vocab = HOIVocabulary.from_dict(dict(stored), source=f"{ckpt_path} (stored vocabulary)")
            self._checkpoint_vocabulary = (vocab, f"{Path(init.root) / 'vocabulary.json'}", str(ckpt_path))
        saved = checkpoint_eval_transforms(ckpt)
        changed = []
        for key, value in saved.items():
            if self._given_on_command_line(key) or getattr(init, key, None) == value:
                continue
            changed.append(f"{key} {getattr(init, key, None)} -> {value}")
            setattr(init, key, value)
        if changed:
            log.info("predict: evaluation transforms of %s (its datamodule's): %s; a --data.init_args.<key> "
                     "flag keeps the config's value", ckpt_path, ", ".join(changed))

    def _require_last_checkpoint(self) -> None:
        """``--ckpt_path last`` must find a checkpoint; Lightning would warn and start from scratch."""
        from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint

        from .errors import CheckpointNotFoundError

        if self.config.get(self.subcommand, {}).get("ckpt_path") != "last":
            return
        callbacks = [cb for cb in self.trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
        # the candidates of Lightning's own `ckpt_path="last"` look-up
        found = {cb.ckpt_path for cb in self.trainer.callbacks if isinstance(cb, OnExceptionCheckpoint)}
        found = found.union(*(cb._find_last_checkpoints(self.trainer) for cb in callbacks))
        if any(os.path.isfile(path) for path in found):
            return
        folders = sorted({str(cb.dirpath) if cb.dirpath else f"the logger's folder ({type(cb).__name__}, no dirpath)"
                          for cb in callbacks})
        where = f"in {', '.join(folders)}" if folders else "(the config has no checkpoint callback)"
        raise CheckpointNotFoundError(
            f"{self.subcommand} --ckpt_path last: no last checkpoint {where} (trainer.default_root_dir: "
            f"{self.trainer.default_root_dir}). Start a new run without --ckpt_path, or pass the path of a "
            "checkpoint file")

    def instantiate_classes(self) -> None:
        """Build the model, data and trainer; a library error raised while building them ends the command.

        jsonargparse wraps an exception raised by a constructor in "Does not validate against any of the
        Union subtypes" followed by the whole parsed namespace. Here the first error of this library found
        in the exception chain (a :class:`~hoiclip_lightning.errors.ConfigurationError` from an unknown CLIP
        model, a misspelled zero-shot split, mismatched decoder depths ...) is written alone to stderr as
        ``error: <type>: <message>`` and the command exits with status 2. Other exceptions propagate as
        they are. The datamodule's ``clip_image_size`` is checked against the model's CLIP here too.
        """
        try:
            super().instantiate_classes()
            if isinstance(self.model, HOICLIPModule) and self.datamodule is not None:
                self.model.check_clip_image_size(self.datamodule)
        except Exception as err:  # noqa: BLE001 - only library errors are turned into a message, see below
            cause = library_error(err)
            if cause is None:
                raise
            sys.stderr.write(f"error: {type(cause).__name__}: {cause}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None

    def before_fit(self) -> None:
        self._require_last_checkpoint()
        # the non-finite guard always keeps the last finite state: add its callback when the config has none
        from .callbacks import NonFiniteLossCheckpoint

        if not any(isinstance(cb, NonFiniteLossCheckpoint) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(NonFiniteLossCheckpoint())

    def before_validate(self) -> None:
        self._require_last_checkpoint()

    def before_test(self) -> None:
        self._require_last_checkpoint()

    def before_predict(self) -> None:
        self._require_last_checkpoint()
        self._adopt_checkpoint_vocabulary()

    def _adopt_checkpoint_vocabulary(self) -> None:
        """``predict`` without a vocabulary file: name the triplets with the checkpoint's stored vocabulary."""
        found = getattr(self, "_checkpoint_vocabulary", None)
        if found is None or not isinstance(self.model, HOICLIPModule):
            return
        vocab, missing, ckpt_path = found
        current = self.model.vocab
        if (current.hois, current.objects, current.verbs) == (vocab.hois, vocab.objects, vocab.verbs):
            return
        log.info("predict: vocabulary null and no %s: using the vocabulary stored in %s (%r, %d HOI classes) "
                 "instead of the built-in %r; --data.init_args.vocabulary chooses another",
                 missing, ckpt_path, vocab.name, vocab.num_hois, current.name)
        if isinstance(self.datamodule, HOIDataModule):
            self.datamodule.use_vocabulary(vocab)
        zero_shot = self.model.zero_shot  # the data's split, linked into the model
        self.model.set_vocabulary(vocab, zero_shot if zero_shot in vocab.zero_shot_unseen else "default")

    def after_fit(self) -> None:
        if not self.config.get(self.subcommand, {}).get("test_after_fit", False):
            return
        ckpt = "best" if getattr(self.trainer.checkpoint_callback, "best_model_path", "") else None
        # verbose=False: the table of after_test is the one listing of the test metrics
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        self.after_test()

    def test(self, **kwargs) -> None:
        """``hoiclip test``: ``Trainer.test`` without its per-metric listing (after_test prints the table)."""
        kwargs["verbose"] = False
        self.trainer.test(**kwargs)

    def after_test(self) -> None:
        if self.trainer.is_global_zero:
            table = format_metric_table({k: float(v) for k, v in self.trainer.callback_metrics.items()
                                         if k.startswith("test/")})
            if table:
                sys.stdout.write(table + "\n")
                sys.stdout.flush()


def library_error(err: BaseException) -> HOICLIPError | None:
    """The first :class:`~hoiclip_lightning.errors.HOICLIPError` in ``err``'s chain (``__cause__`` /
    ``__context__``, ``err`` included), or ``None``."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, HOICLIPError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# ---------------------------------------------------------------------- extra subcommands
def _synth(argv: list[str]) -> None:
    from .data.synthetic import generate_synthetic_dataset

    parser = argparse.ArgumentParser(prog="hoiclip synth",
                                     description="Write the synthetic HOI dataset in the HICO-DET layout.")
    parser.add_argument("--out", required=True, help="output folder (HICO-DET layout + vocabulary.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--num-val", type=int, default=100,
                        help="validation images (images/val2015, annotations/val_hico.json; own random stream, "
                             "used for checkpoint selection); 0: none")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--max-people", type=int, default=3, help="people (interaction groups) per image, 1-3")
    parser.add_argument("--no-distractors", action="store_true", help="no objects without interaction")
    parser.add_argument("--no-clutter", action="store_true", help="plain background")
    parser.add_argument("--easy", action="store_true",
                        help="the quickstart world: --max-people 1 --no-distractors --no-clutter")
    args = parser.parse_args(argv)
    if args.easy:
        args.max_people, args.no_distractors, args.no_clutter = 1, True, True
    from pathlib import Path

    out = Path(args.out)
    if out.exists() and (out / "vocabulary.json").exists() and not args.overwrite:
        summary_file = out / "vocabulary.json"
        no_val = args.num_val > 0 and not (out / "annotations" / "val_hico.json").is_file()
        hint = " (it has no validation split: regenerate to add one)" if no_val else ""
        sys.stdout.write(f"synthetic dataset already present at {out} ({summary_file.name} found){hint}; "
                         "pass --overwrite to regenerate\n")
        return
    summary = generate_synthetic_dataset(out, seed=args.seed, num_train=args.num_train, num_test=args.num_test,
                                         num_val=args.num_val,
                                         image_size=args.image_size, overwrite=args.overwrite,
                                         max_people=args.max_people, distractors=not args.no_distractors,
                                         clutter=not args.no_clutter)
    sys.stdout.write(f"{summary}\n")


EXTRA_SUBCOMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "synth": (_synth, "write the synthetic HOI dataset (HICO-DET layout)"),
    "verb-embeddings": (lambda argv: __import__("hoiclip_lightning.knowledge.verb_embeddings",
                                                fromlist=["main"]).main(argv) and None,
                        "compute the verb classifier file by visual semantic arithmetic (docs/knowledge.md)"),
    "clip-pretrain": (lambda argv: __import__("hoiclip_lightning.knowledge.clip_pretrain",
                                              fromlist=["main"]).main(argv) and None,
                      "contrastive image-caption pretraining of a small CLIP; writes a clip_pretrained file"),
    "export-detector": (lambda argv: __import__("hoiclip_lightning.models.detr_checkpoint",
                                                fromlist=["main"]).main(argv),
                        "write a trained checkpoint's detector as a detr_checkpoint file (synthetic DETR analogue)"),
    "sweep": (lambda argv: __import__("hoiclip_lightning.sweep", fromlist=["main"]).main(argv),
              "train + test a config over training-data fractions locally (summary table and plot)"),
    "evaluate": (lambda argv: __import__("hoiclip_lightning.metrics.evaluate", fromlist=["main"]).main(argv) and None,
                 "score another code base's prediction dump (QPIC family, UPT family, hoiclip predict)"),
    "convert-official": (lambda argv: __import__("hoiclip_lightning.interop.official", fromlist=["main"]).main(argv),
                         "convert a released HOICLIP checkpoint (.pth) into a .ckpt"),
}


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``hoiclip`` console script (``args`` defaults to ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if args is None else args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in EXTRA_SUBCOMMANDS:
        EXTRA_SUBCOMMANDS[argv[0]][0](argv[1:])
        return
    if not argv or argv[0] in ("-h", "--help"):
        extra = "\n".join(f"    {name:<18} {doc}" for name, (_, doc) in EXTRA_SUBCOMMANDS.items())
        sys.stdout.write(f"extra hoiclip subcommands (beside fit/validate/test/predict):\n{extra}\n\n")
    torch.set_float32_matmul_precision("high")
    HOICLIPCLI(
        HOICLIPModule,
        HOIDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=None if args is None else argv,  # None: LightningCLI reads sys.argv itself
    )


if __name__ == "__main__":
    main()
