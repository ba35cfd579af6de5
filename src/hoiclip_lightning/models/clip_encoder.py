"""Frozen open_clip ViT: global image embedding, spatial tokens and prompt embeddings.

HOICLIP needs two things from CLIP's image tower that stock ``encode_image`` does not give together:
the projected global embedding ``[B, E]`` and the whole token sequence after ``ln_post`` and before the
projection ``[B, L, W]`` (CLS token first). :class:`CLIPEncoder` computes both in one pass by calling the
``VisionTransformer``'s own sub-modules (``conv1``, ``class_embedding``, ``positional_embedding``,
``patch_dropout``, ``ln_pre``, ``transformer``, ``ln_post``, ``proj``) — open_clip is not forked or
patched. Only ViT towers with CLS-token pooling are supported (as in the reference).

Two small architectures are registered with open_clip on import, so tests and the quickstart run offline:

* ``hoiclip-tiny`` (64 px, patch 16, width 64, 2 layers, 2 heads, embed dim 32): random weights only, for
  tests;
* ``hoiclip-small`` (64 px, patch 16, width 128 x 4 layers; text width 128 x 3 layers, context 32; embed
  dim 128; 7.9 M parameters): small enough to pretrain on a CPU with ``hoiclip clip-pretrain``
  (:mod:`hoiclip_lightning.knowledge.clip_pretrain`), whose weights file ``pretrained`` then accepts.

``pretrained`` may be such a weights file (:mod:`hoiclip_lightning.models.clip_weights`): it names its
architecture, which must be ``model_name``, and a fingerprint of its weights, checked on load.

    >>> enc = CLIPEncoder("hoiclip-tiny", pretrained=None)
    >>> enc.width, enc.embed_dim, enc.image_size, enc.num_tokens
    (64, 32, 64, 17)
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Literal

import open_clip
import torch
from einops import rearrange
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from ..errors import ConfigurationError

log = logging.getLogger(__name__)

TINY_CLIP_NAME = "hoiclip-tiny"
TINY_CLIP_CONFIG: dict = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
SMALL_CLIP_NAME = "hoiclip-small"
SMALL_CLIP_CONFIG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3},
}
LIBRARY_CLIP_CONFIGS: dict[str, dict] = {TINY_CLIP_NAME: TINY_CLIP_CONFIG, SMALL_CLIP_NAME: SMALL_CLIP_CONFIG}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def register_tiny_clip() -> None:
    """Register the library's architectures (``hoiclip-tiny``, ``hoiclip-small``) with open_clip (idempotent)."""
    configs = open_clip.factory._MODEL_CONFIGS
    for name, config in LIBRARY_CLIP_CONFIGS.items():
        if name not in configs:
            configs[name] = copy.deepcopy(config)


register_library_clips = register_tiny_clip
register_tiny_clip()


def weights_fingerprint(module: nn.Module, include: str = "", exclude: str | None = None,
                        samples_per_tensor: int = 4096) -> str:
    """SHA-256 (hex) over name, shape and a strided sample of every floating-point tensor of a state dict.

    Args:
        module: the module (e.g. an open_clip model).
        include: only names starting with this prefix (``"visual."``: the image tower).
        exclude: skip names starting with this prefix.
        samples_per_tensor: at most this many values of each tensor enter the hash (fast for large models;
            any training or re-initialisation changes essentially every value).
    """
    return state_dict_fingerprint(module.state_dict(), include, exclude, samples_per_tensor)


def state_dict_fingerprint(state_dict: dict[str, Tensor], include: str = "", exclude: str | None = None,
                           samples_per_tensor: int = 4096) -> str:
    """:func:`weights_fingerprint` of a state dict (e.g. one read from a file)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(state_dict.items()):
        if not name.startswith(include) or (exclude and name.startswith(exclude)) or "logit_" in name:
            continue
        if not torch.is_floating_point(p):
            continue
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // samples_per_tensor)].float().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def _config_quick_gelu(model_name: str) -> bool:
    """Whether open_clip's config of ``model_name`` uses QuickGELU."""
    config = open_clip.factory._MODEL_CONFIGS.get(model_name) or {}
    return bool(config.get("quick_gelu", False))


def check_clip_model_name(model_name: str) -> None:
    """Refuse an architecture name open_clip does not know, suggesting the closest known names.

    Names with a schema (``hf-hub:...``, ``local-dir:...``) are left to open_clip.

    Raises:
        ConfigurationError: the name is unknown (the message lists up to five close names).
    """
    if ":" in model_name:
        return
    known = open_clip.list_models()
    if model_name in known:
        return
    import difflib

    close = difflib.get_close_matches(model_name, known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigurationError(
        f"unknown CLIP model {model_name!r} (clip_model): open_clip has no architecture of that name{hint} "
        "(open_clip.list_models() lists all; HOICLIP needs a CLS-pooled ViT such as ViT-B-32)"
    )


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


class _quiet_random_init:  # noqa: N801 - used as a context manager
    """Silence open_clip's "initialized randomly" warning while the weights come from a file next."""

    def __enter__(self) -> None:
        self.filter = _DropRandomInitWarning()
        logging.getLogger().addFilter(self.filter)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeFilter(self.filter)


class CLIPEncoder(nn.Module):
    """An open_clip ViT CLIP model exposing global embeddings, spatial tokens and text embeddings.

    Args:
        model_name: open_clip architecture name (``ViT-B-32``, ``ViT-L-14``, ``hoiclip-tiny`` ...).
        pretrained: open_clip pretrained tag (``openai``), a CLIP weights file of ``hoiclip clip-pretrain``
            (:mod:`~hoiclip_lightning.models.clip_weights`; its architecture must be ``model_name``), another
            local weights file (read by open_clip), or ``None`` (random init).
        precision: dtype of the towers (``fp32``, ``fp16``, ``bf16``; open_clip keeps LayerNorms in fp32).
            Outputs are always returned in fp32. Low precision requires ``frozen=True``.
        frozen: no parameter requires grad and the model stays in eval mode even under ``.train()``.
        quick_gelu: the activation. ``None``: from the weights (QuickGELU for OpenAI's, see
            :meth:`_from_local_file`; the architecture's own otherwise); ``True``: QuickGELU;
            ``False``: the architecture's own (refused for OpenAI's weights).

    Attributes:
        model: the open_clip model (parameter names ``model.visual.*``, ``model.transformer.*``, ...).
        model_name, pretrained, precision: the arguments (they key the prompt-embedding cache).
        quick_gelu: whether the built model uses QuickGELU (keys the prompt-embedding cache when it
            differs from the architecture's own activation).
        width: W, visual transformer width.
        embed_dim: E, joint embedding width.
        image_size: S, square input size of the image tower.
        num_tokens: L, visual tokens including CLS.
        mean, std: per-channel normalisation the CLIP view of the data pipeline must use.

    Example:
        >>> import torch
        >>> clip = CLIPEncoder("hoiclip-tiny", pretrained=None)  # a random tiny CLIP (tests, ablations)
        >>> embeds, tokens = clip.encode_image(torch.randn(2, 3, clip.image_size, clip.image_size))
        >>> tuple(embeds.shape) == (2, clip.embed_dim), tokens.shape[-1] == clip.width
        (True, True)
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        precision: Literal["fp32", "fp16", "bf16"] = "fp32",
        frozen: bool = True,
        quick_gelu: bool | None = None,
    ) -> None:
        super().__init__()
        if precision not in _DTYPES:
            raise ConfigurationError(f"unknown clip precision {precision!r}; accepted: {tuple(_DTYPES)}")
        if precision != "fp32" and not frozen:
            raise ConfigurationError(f"clip_precision={precision!r} needs a frozen CLIP (freeze_clip=True)")
        register_tiny_clip()
        check_clip_model_name(model_name)
        from .clip_weights import read_clip_weights

        weights = read_clip_weights(pretrained, model_name) if pretrained else None
        try:
            if weights is not None:  # a hoiclip CLIP weights file: architecture and fingerprint already checked
                own = bool(weights.model_config.get("quick_gelu", False))
                if quick_gelu is not None and quick_gelu != own:
                    raise ConfigurationError(
                        f"{weights.path} was written for {model_name!r} with {'QuickGELU' if own else 'GELU'}; "
                        f"clip_quick_gelu: {quick_gelu} contradicts it (remove the setting)")
                with _quiet_random_init():
                    model = open_clip.create_model(model_name, pretrained=None, precision=precision)
                model.load_state_dict(weights.state_dict)
                self.quick_gelu = own
                log.info("CLIP %s weights from %s (fingerprint %s)", model_name, weights.path,
                         weights.fingerprint[:12])
            elif pretrained and Path(str(pretrained)).expanduser().is_file():
                model = self._from_local_file(model_name, Path(str(pretrained)).expanduser(), precision, quick_gelu)
            else:
                # OpenAI's weights were trained with QuickGELU; open_clip's plain "ViT-B-32" config uses GELU
                # and would only warn, so the activation is forced for the `openai` tag (as the reference's CLIP)
                if pretrained == "openai" and quick_gelu is False:
                    raise ConfigurationError(
                        "clip_pretrained: openai loads OpenAI's weights, trained with QuickGELU; remove "
                        "clip_quick_gelu: false")
                force = pretrained == "openai" or bool(quick_gelu)
                model = open_clip.create_model(model_name, pretrained=pretrained or None, precision=precision,
                                               force_quick_gelu=force)
                self.quick_gelu = force or _config_quick_gelu(model_name)
        except RuntimeError as err:
            raise ConfigurationError(
                f"open_clip could not create {model_name!r} with pretrained={pretrained!r}: {err}"
            ) from err
        visual = model.visual
        if not isinstance(visual, VisionTransformer):
            raise ConfigurationError(
                f"CLIP model {model_name!r} has a {type(visual).__name__} image tower; HOICLIP needs a ViT "
                "(open_clip VisionTransformer), e.g. ViT-B-32, ViT-B-16 or ViT-L-14"
            )
        if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise ConfigurationError(
                f"CLIP model {model_name!r} does not pool the CLS token after ln_post; HOICLIP needs a "
                "CLS-pooled ViT (e.g. ViT-B-32)"
            )
        if visual.proj is None:
            raise ConfigurationError(f"CLIP model {model_name!r} has no visual projection")
        self.model = model
        self.model_name = model_name
        self.pretrained = pretrained or None
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.frozen = frozen
        self.width = int(visual.proj.shape[0])
        self.embed_dim = int(visual.proj.shape[1])
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.num_tokens = int(visual.positional_embedding.shape[0])
        pp = open_clip.get_model_preprocess_cfg(model)
        self.mean: tuple[float, ...] = tuple(float(m) for m in pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std: tuple[float, ...] = tuple(float(s) for s in pp.get("std", open_clip.OPENAI_DATASET_STD))
        self.tokenizer = open_clip.get_tokenizer(model_name)
        if frozen:
            self.model.requires_grad_(False)
            self.model.eval()
        log.info(
            "CLIP %s (pretrained=%s, %s): W=%d, E=%d, input %d px, %d tokens, %s",
            model_name, pretrained, precision, self.width, self.embed_dim, self.image_size, self.num_tokens,
            "frozen" if frozen else "trainable",
        )

    # ------------------------------------------------------------------ local weights files
    def _from_local_file(self, model_name: str, path: Path, precision: str, quick_gelu: bool | None) -> nn.Module:
        """Build ``model_name`` with the weights of a local file that is not a hoiclip CLIP weights file.

        OpenAI's weights get QuickGELU whatever their form: a TorchScript archive (read without running
        its code, :func:`~hoiclip_lightning.models.openai_clip.read_torchscript_state_dict`) or a state
        dict saved from one (it keeps the archive's ``input_resolution`` / ``context_length`` /
        ``vocab_size``). A plain state dict that does not show its origin, for an architecture that OpenAI
        released with QuickGELU but open_clip defines with GELU (``ViT-B-32``; a ``-quickgelu`` twin is
        registered), is refused unless ``quick_gelu`` says which activation it was trained with. Other
        files (safetensors ...) are read by open_clip.
        """
        from .openai_clip import OPENAI_ARCHIVE_KEYS, openai_weights_origin

        origin, state = openai_weights_origin(path)
        openai = origin in ("torchscript", "openai_state_dict")
        own = _config_quick_gelu(model_name)
        kind = "a TorchScript archive" if origin == "torchscript" else "a state dict saved from OpenAI's archive"
        if openai and quick_gelu is False and not own:
            raise ConfigurationError(
                f"{path} is {kind}: OpenAI's CLIP weights, trained with QuickGELU; clip_quick_gelu: false would "
                f"build GELU and change every output. Remove clip_quick_gelu (or set it to true)")
        twin = f"{model_name}-quickgelu"
        if quick_gelu is None and not openai and not own and twin in open_clip.list_models():
            raise ConfigurationError(
                f"{path}: a state dict for {model_name!r}, whose open_clip config uses GELU, while OpenAI's weights "
                f"for this architecture were trained with QuickGELU, and nothing in the file shows which it holds. "
                f"For OpenAI's weights set clip_model: {twin} (or give OpenAI's TorchScript archive itself); "
                f"for weights trained with GELU set clip_quick_gelu: false")
        use_quick_gelu = own or openai or bool(quick_gelu)
        if state is None:  # a format open_clip reads itself
            model = open_clip.create_model(model_name, pretrained=str(path), precision=precision,
                                           force_quick_gelu=use_quick_gelu)
        else:
            with _quiet_random_init():
                model = open_clip.create_model(model_name, pretrained=None, precision=precision,
                                               force_quick_gelu=use_quick_gelu)
            self._load_plain_state(model, model_name, state, path, ignore=OPENAI_ARCHIVE_KEYS)
        self.quick_gelu = use_quick_gelu
        log.info("CLIP %s weights from %s (%s, %s)", model_name, path, origin.replace("_", " "),
                 "QuickGELU" if use_quick_gelu else "GELU")
        return model

    @staticmethod
    def _load_plain_state(model: nn.Module, model_name: str, state: dict[str, Tensor], path: Path,
                          ignore: tuple[str, ...]) -> None:
        from ..errors import CheckpointError
        from .openai_clip import describe_architecture, openai_clip_architecture, registered_clip_name

        own = model.state_dict()
        extra = [k for k in state if k not in own and k not in ignore and not k.endswith("attn_mask")]
        missing = [k for k in own if k not in state]
        shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if extra or missing or shapes:
            try:
                arch = openai_clip_architecture(state)
                name = registered_clip_name(arch)
                found = f"; the file holds {describe_architecture(arch)}" + (f" (clip_model: {name})" if name else "")
            except CheckpointError:
                found = ""
            raise CheckpointError(
                f"{path} does not fit CLIP {model_name!r}: {len(missing)} missing, {len(extra)} unexpected, "
                f"{len(shapes)} of another shape (first: {(missing + extra + shapes)[:3]}){found}")
        with torch.no_grad():
            model.load_state_dict({k: state[k] for k in own}, strict=True)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> CLIPEncoder:
        """Set the training mode; a frozen CLIP always stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def image_fingerprint(self) -> str:
        """:func:`weights_fingerprint` of the image tower (recorded in verb-embedding files)."""
        return weights_fingerprint(self.model, include="visual.")

    @property
    def visual_proj(self) -> Tensor:
        """``[W, E]`` CLIP visual projection (``visual.proj``)."""
        return self.model.visual.proj

    # ------------------------------------------------------------------ image
    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Encode CLIP views.

        Args:
            images: ``[B, 3, S, S]`` images normalised with :attr:`mean` / :attr:`std`.

        Returns:
            ``embeds`` ``[B, E]`` projected CLS embedding (as ``model.encode_image``, not normalised) and
            ``tokens`` ``[B, L, W]`` all tokens after ``ln_post``, before the projection (CLS first);
            both fp32.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            visual = self.model.visual
            x = visual.conv1(images.to(self.dtype))  # [B, W, g, g]
            x = rearrange(x, "b w gh gw -> b (gh gw) w")
            cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
            x = visual.patch_dropout(x)
            x = visual.ln_pre(x)
            x = visual.transformer(x)
            tokens = visual.ln_post(x)
            embeds = tokens[:, 0] @ visual.proj
        return embeds.float(), tokens.float()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Same as :meth:`encode_image`."""
        return self.encode_image(images)

    # ------------------------------------------------------------------ text
    def encode_text(self, prompts: list[str], batch_size: int = 256) -> Tensor:
        """Embed text prompts.

        Args:
            prompts: N prompts.
            batch_size: prompts per forward pass.

        Returns:
            ``[N, E]`` fp32 text embeddings (not normalised).
        """
        device = self.visual_proj.device
        chunks = []
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            for start in range(0, len(prompts), batch_size):
                tokens = self.tokenizer(list(prompts[start : start + batch_size])).to(device)
                chunks.append(self.model.encode_text(tokens).float())
        if not chunks:
            return torch.zeros(0, self.embed_dim, device=device)
        return torch.cat(chunks)
