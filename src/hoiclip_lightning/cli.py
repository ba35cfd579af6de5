"""The ``hoiclip`` command: a LightningCLI plus a few extra subcommands.

Lightning subcommands (model and datamodule from YAML, subclass mode)::

    hoiclip fit --config configs/quickstart.yaml
    hoiclip test --config configs/quickstart.yaml --ckpt_path runs/quickstart/checkpoints/last.ckpt
    hoiclip fit --config configs/experiments/hico_det.yaml --print_config

Extra subcommands (each has ``--help``): each is one library function, and its flags are that function's
parameters (``--num_train`` for ``num_train``, booleans as ``--overwrite true``, lists as ``"[0.25, 1.0]"``),
with the function's defaults and the docstring's descriptions (:class:`Subcommand`)::

    hoiclip synth --out data/synthetic --seed 0 --num_train 400 --num_test 100 --num_val 100
    hoiclip clip-pretrain --out data/clip/hoiclip_small.pt --synthetic 3000
    hoiclip export-detector --checkpoint runs/detector_pretrain/checkpoints/last.ckpt --out data/detector/det.pt
    hoiclip evaluate --predictions results.json --annotations test_hico.json
    hoiclip demo --ckpt_path runs/quickstart/checkpoints/last.ckpt      # web page (pip install '.[demo]')
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser, DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .data.datamodule import HOIDataModule, resolve_vocabulary_source
from .errors import HOICLIPError
from .metrics.report import format_metric_table
from .models.module import HOICLIPModule

log = logging.getLogger(__name__)

__all__ = ["EXTRA_SUBCOMMANDS", "HOICLIPCLI", "Subcommand", "format_metric_table", "main", "run_subcommand"]


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

    ``fit`` started by a W&B sweep agent runs in its own folder, ``<default_root_dir>/sweep-<sweep id>/<run
    id>`` (:func:`~hoiclip_lightning.sweep.isolate_agent_run`), continues from that folder's ``last.ckpt``
    when W&B hands a preempted run out again, and gets
    :class:`~hoiclip_lightning.callbacks.PreemptionCheckpoint` (SIGTERM: ``last.ckpt`` + W&B requeue).

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
            builtin_fallback = not (Path(init.root) / "vocabulary.json").is_file()
            init.vocabulary = resolve_vocabulary_source(None, init.root, init.dataset_format)
        if self.subcommand == "predict" and init is not None:
            self._eval_transforms_from_checkpoint(config.get("ckpt_path"), init, builtin_fallback)
        if self.subcommand == "fit":  # a W&B sweep agent's run: its own folder, resumed when W&B requeues it
            from .sweep import isolate_agent_run

            self._agent_run_dir = isolate_agent_run(config)
        self._no_weight_files_with_a_checkpoint(config)

    def _no_weight_files_with_a_checkpoint(self, config) -> None:
        """With ``--ckpt_path`` the checkpoint's state dict holds every weight: the model is built without
        reading (or downloading) the config's ``model.init_args.weights`` files."""
        model_init = getattr(getattr(config, "model", None), "init_args", None)
        weights = getattr(model_init, "weights", None) if model_init is not None else None
        if not config.get("ckpt_path") or weights is None:
            return
        values = weights.get("init_args", weights) if hasattr(weights, "get") else weights
        named = {k: v for k, v in vars(values).items() if v is not None} if hasattr(values, "__dict__") else {}
        if named:
            log.info("%s --ckpt_path %s: every weight comes from the checkpoint; not reading %s", self.subcommand,
                     config.get("ckpt_path"), ", ".join(f"weights.{k}={v}" for k, v in sorted(named.items())))
        model_init.weights = None

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
        if getattr(self, "_agent_run_dir", None) is not None:
            from .callbacks import PreemptionCheckpoint

            if not any(isinstance(cb, PreemptionCheckpoint) for cb in self.trainer.callbacks):
                self.trainer.callbacks.append(PreemptionCheckpoint())

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
        current = self.model.vocabulary
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
        from .callbacks import ValidationCurve

        if self.trainer.is_global_zero:
            for curve in (cb for cb in self.trainer.callbacks if isinstance(cb, ValidationCurve) and cb.points):
                sys.stdout.write(curve.report() + "\n")
            sys.stdout.flush()
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
@dataclass(frozen=True)
class Subcommand:
    """An extra ``hoiclip`` subcommand whose flags are the parameters of one library function.

    jsonargparse reads ``function``'s signature (as LightningCLI reads the constructors): one ``--name`` flag
    per parameter, the parameter's name with underscores (as ``--trainer.max_steps``), its type checked,
    its default the function's own and its help text the ``Args:`` entry of its docstring. ``skip`` names
    the parameters that are not flags (objects the command builds, or values it passes itself).
    ``run(parser, argv)`` adds what only the command line has, parses ``argv``, calls the function and
    writes the result to stdout.
    """

    function: str  #: ``"module:name"`` under ``hoiclip_lightning``, imported when the subcommand runs
    summary: str  #: one line for ``hoiclip --help``
    run: Callable[[ArgumentParser, list[str]], None]
    skip: frozenset[str] = frozenset()

    def target(self) -> Callable[..., Any]:
        """The function whose signature gives the flags."""
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)

    def parser(self, name: str) -> ArgumentParser:
        """``hoiclip <name>``'s parser: every parameter of :meth:`target` but ``skip`` as a flag."""
        function = self.target()
        doc = inspect.getdoc(function) or ""
        parser = LightningArgumentParser(prog=f"hoiclip {name}", description=_plain(doc.split("\n\n")[0]),
                                         env_prefix="HOICLIP", default_env=False, formatter_class=_HelpFormatter)
        parser.add_function_arguments(function, as_group=False, skip=set(self.skip))
        return parser


def _plain(text: str) -> str:
    """Docstring text as help text: ``code`` and :role:`~path.Name` become code and Name."""
    text = re.sub(r":[a-z]+:`~?(?:[\w.]*\.)?([^`]+)`", r"\1", text)
    return text.replace("``", "")


class _HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, with the docstrings' reStructuredText markup removed."""

    def _expand_help(self, action: Any) -> str:
        return _plain(super()._expand_help(action))


def _written(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _synth(parser: ArgumentParser, argv: list[str]) -> None:
    from .data.synthetic import EASY_WORLD, generate_synthetic_dataset

    easy = ", ".join(f"{k} {str(v).lower()}" for k, v in EASY_WORLD.items())
    parser.add_argument("--easy", type=bool, default=False,
                        help=f"the quickstart's world: the defaults of {easy} (a flag given explicitly still wins)")
    cfg = parser.parse_args(argv)
    if cfg.easy:
        parser.set_defaults(**EASY_WORLD)
        cfg = parser.parse_args(argv)
    out = Path(cfg.out)
    if (out / "vocabulary.json").is_file() and not cfg.overwrite:
        no_val = cfg.num_val > 0 and not (out / "annotations" / "val_hico.json").is_file()
        hint = " (it has no validation split: regenerate to add one)" if no_val else ""
        _written(f"synthetic dataset already present at {out} (vocabulary.json found){hint}; "
                 "pass --overwrite true to regenerate")
        return
    kwargs = {k: v for k, v in cfg.as_dict().items() if k != "easy"}
    _written(str(generate_synthetic_dataset(**kwargs)))


def _verb_embeddings(parser: ArgumentParser, argv: list[str]) -> None:
    from jsonargparse import ActionConfigFile, Namespace
    from lightning.pytorch import Trainer

    from .knowledge.verb_embeddings import compute_verb_embeddings
    from .models.clip_encoder import CLIPEncoder
    from .models.config import HOICLIPConfig, WeightSources

    options = set(inspect.signature(compute_verb_embeddings).parameters) - {"datamodule", "clip"}
    # the config groups of `hoiclip fit`, so the same --config files work; trainer is accepted, unused
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="the config files of `hoiclip fit`")
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.add_lightning_class_args(HOIDataModule, "data", subclass_mode=True, required=True)
    parser.add_lightning_class_args(HOICLIPModule, "model", subclass_mode=True, required=False)
    parser.add_argument("--seed_everything", type=bool | int, default=True,
                        help="seed of a random CLIP (weights.clip_pretrained null), drawn as `hoiclip fit` draws it")
    parser.add_argument("--test_after_fit", type=bool, default=False, help="accepted (fit configs have it), unused")
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="accepted (fit configs have it), unused")
    parser.add_argument("--out", type=str, required=True, help="output file (.pt)")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace an existing output file")
    cfg = parser.parse_args(argv)
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        _written(f"{out} exists; pass --overwrite true to replace it")
        return
    data_cls = _class_of(cfg.data.class_path)
    data_args = cfg.data.init_args.as_dict() if isinstance(cfg.data.init_args, Namespace) else dict(cfg.data.init_args)
    datamodule = data_cls(**data_args)
    # the CLIP of the model config: architecture from `net`, weights from `weights.clip_pretrained`
    model_args = getattr(getattr(cfg, "model", None), "init_args", None)
    net = _dataclass_from(HOICLIPConfig, getattr(model_args, "net", None))
    pretrained = _dataclass_from(WeightSources, getattr(model_args, "weights", None)).clip_pretrained
    seed = cfg.seed_everything if type(cfg.seed_everything) is int else None
    if pretrained is None and seed is not None:
        # a random CLIP is drawn as `hoiclip fit` draws it (seeded, then CLIP is the model's first part)
        from lightning.pytorch import seed_everything

        seed_everything(seed, verbose=False)
    clip = CLIPEncoder(net.clip_model, pretrained, net.clip_precision, frozen=True, quick_gelu=net.clip_quick_gelu)
    clip.seed = seed if pretrained is None else None
    result = compute_verb_embeddings(datamodule, clip, **{k: cfg[k] for k in options})
    result.save(out)
    meta = result.metadata
    pairs = max(meta["num_pairs"], 1)
    _written(
        f"verb embeddings [{result.embeddings.shape[0]}, {result.embeddings.shape[1]}] written to {out}\n"
        f"  CLIP {meta['clip_model']} (pretrained={meta['clip_pretrained']}), data {meta['dataset_root']} "
        f"(fraction {meta['train_fraction']}, zero_shot {meta['zero_shot']!r}, include_unseen "
        f"{meta['include_unseen']})\n"
        f"  {meta['num_images']} images, {meta['num_pairs']} HOI instances, {result.seconds:.1f} s "
        f"({1000 * result.seconds / pairs:.1f} s per 1,000 instances); "
        f"{len(meta['verbs_without_instance'])} verb(s) and {len(meta['hois_without_instance'])} HOI class(es) "
        f"without training instance\n"
        f"  use it with: --model.init_args.weights.verb_embeddings {out}")


def _dataclass_from(cls: type, section: Any) -> Any:
    """``cls`` from a parsed config section (a Namespace, with or without ``init_args``; ``None``: defaults);
    fields ``cls`` does not have (another model's ``net``) are left out."""
    from jsonargparse import Namespace

    if section is None:
        return cls()
    values = section.as_dict() if isinstance(section, Namespace) else dict(vars(section))
    values = values.get("init_args", values)
    return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def _class_of(class_path: str) -> type:
    module_name, _, class_name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


def _clip_pretrain(parser: ArgumentParser, argv: list[str]) -> None:
    from .knowledge.clip_pretrain import format_zero_shot, pretrain_clip

    result = pretrain_clip(**parser.parse_args(argv).as_dict())
    text = (f"CLIP {result.clip_model} weights written to {result.path}\n"
            f"  {result.steps} steps on {result.num_pairs} pairs in {result.seconds:.0f} s\n"
            f"  use it with: net.clip_model: {result.clip_model}, weights.clip_pretrained: {result.path}")
    if result.zero_shot:
        text += "\n" + format_zero_shot(result.zero_shot, "zero-shot check against the HOI prompts "
                                                          "(accuracy, chance in parentheses)")
    _written(text)


def _export_detector(parser: ArgumentParser, argv: list[str]) -> None:
    from .models.detr_checkpoint import export_detector

    cfg = parser.parse_args(argv)
    exported = export_detector(**cfg.as_dict())
    _written(f"wrote {cfg.out}: {len(exported)} detector tensors")


def _sweep(parser: ArgumentParser, argv: list[str]) -> None:
    from .sweep import grid_markdown, summary_markdown, sweep

    fit_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, fit_args = argv[:cut], argv[cut + 1:]
    parser.description = (f"{parser.description} Arguments after `--` are added to every `hoiclip fit` "
                          "(e.g. -- --trainer.max_steps 200).")
    cfg = parser.parse_args(argv)
    try:
        runs = sweep(**cfg.as_dict(), fit_args=fit_args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    grid = any(r.seed is not None for r in runs) or any(r.variant for r in runs)
    out = Path(cfg.out)
    _written((grid_markdown(runs) if grid else summary_markdown(runs)) + "\n"
             f"summary: {out / 'summary.csv'}, {out / 'summary.md'}, {out / 'map_vs_fraction.png'}")
    if any(not r.ok for r in runs):
        raise SystemExit(1)


def _evaluate(parser: ArgumentParser, argv: list[str]) -> None:
    from .metrics.evaluate import evaluate_to_folder

    cfg = parser.parse_args(argv)
    report = evaluate_to_folder(**cfg.as_dict())
    _written(report.text)


def _convert_official(parser: ArgumentParser, argv: list[str]) -> None:
    from .interop.official import convert_official_checkpoint

    cfg = parser.parse_args(argv)
    _, report = convert_official_checkpoint(**cfg.as_dict())
    _written(report.summary() + (f"\nwrote {cfg.dst}" if cfg.dst is not None else ""))


def _demo(parser: ArgumentParser, argv: list[str]) -> None:
    from .inference.demo import DEMO_INSTALL_HINT, example_paths, launch_demo

    parser.description = f"{parser.description} Needs Gradio: {DEMO_INSTALL_HINT}"
    args = parser.parse_args(argv).as_dict()
    if args.get("examples") is not None:
        args["examples"] = example_paths(args["examples"])
    launch_demo(**args)


def _convert_genvlkt(parser: ArgumentParser, argv: list[str]) -> None:
    from .interop.genvlkt_official import convert_genvlkt_checkpoint

    cfg = parser.parse_args(argv)
    _, report = convert_genvlkt_checkpoint(**cfg.as_dict())
    _written(report.summary() + (f"\nwrote {cfg.dst}" if cfg.dst is not None else ""))


EXTRA_SUBCOMMANDS: dict[str, Subcommand] = {
    "synth": Subcommand("data.synthetic:generate_synthetic_dataset",
                        "write the synthetic HOI dataset (HICO-DET layout)", _synth),
    "verb-embeddings": Subcommand("knowledge.verb_embeddings:compute_verb_embeddings",
                                  "compute the verb classifier file by visual semantic arithmetic (docs/knowledge.md)",
                                  _verb_embeddings, frozenset({"datamodule", "clip"})),
    "clip-pretrain": Subcommand("knowledge.clip_pretrain:pretrain_clip",
                                "contrastive image-caption pretraining of a small CLIP; writes a "
                                "weights.clip_pretrained file",
                                _clip_pretrain),
    "export-detector": Subcommand("models.detr_checkpoint:export_detector",
                                  "write a trained checkpoint's detector as a weights.detr_checkpoint file "
                                  "(synthetic DETR analogue)", _export_detector),
    "sweep": Subcommand("sweep:sweep", "train + test a config over training-data fractions locally (summary table "
                        "and plot)", _sweep, frozenset({"fit_args"})),
    "evaluate": Subcommand("metrics.evaluate:evaluate_to_folder",
                           "score another code base's prediction dump (QPIC family, UPT family, hoiclip predict)",
                           _evaluate),
    "convert-official": Subcommand("interop.official:convert_official_checkpoint",
                                   "convert a released HOICLIP checkpoint (.pth) into a .ckpt", _convert_official,
                                   frozenset({"net"})),
    "convert-genvlkt": Subcommand("interop.genvlkt_official:convert_genvlkt_checkpoint",
                                  "convert a released GEN-VLKT checkpoint (.pth) into a .ckpt", _convert_genvlkt,
                                  frozenset({"net"})),
    "demo": Subcommand("inference.demo:launch_demo",
                       "web page: detect HOIs in an uploaded image, edit the HOI prompts (needs the [demo] extra)",
                       _demo, frozenset({"block"})),
}


def run_subcommand(name: str, argv: list[str]) -> None:
    """Run the extra subcommand ``name`` on ``argv``; a library error ends it with status 2 and one message."""
    command = EXTRA_SUBCOMMANDS[name]
    try:
        command.run(command.parser(name), argv)
    except HOICLIPError as err:
        sys.stderr.write(f"hoiclip {name}: error: {type(err).__name__}: {err}\n")
        sys.stderr.flush()
        raise SystemExit(2) from err


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``hoiclip`` console script (``args`` defaults to ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if args is None else args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in EXTRA_SUBCOMMANDS:
        run_subcommand(argv[0], argv[1:])
        return
    if not argv or argv[0] in ("-h", "--help"):
        extra = "\n".join(f"    {name:<18} {command.summary}" for name, command in EXTRA_SUBCOMMANDS.items())
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
