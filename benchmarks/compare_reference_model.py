"""Compare our HOICLIP with the reference implementation, given the same random weights.

The reference model is built from an external copy of the public reference repository (``--ref-dir``;
e.g. ``git archive`` of github.com/Artanic30/HOICLIP into /tmp). Nothing of it is copied here: this script
imports it, gives it random weights, converts its state dict with
:func:`hoiclip_lightning.interop.load_official_state_dict` (the converter of ``hoiclip convert-official``)
into our model, runs both on the same padded batch and prints the largest absolute differences of the
outputs.

To import the reference on a current Python/PyTorch without its optional dependencies, three modules are
shimmed in ``sys.modules`` (the reference files are not edited): ``pkg_resources`` (only its
``packaging`` attribute is used), ``clip`` (the reference's datasets import the stock package; it is
aliased to the reference's own ``ModifiedCLIP.clip``) and ``cv2`` (imported by the visualisation
variant, unused here). ``ModifiedCLIP.clip.load`` is replaced at run time by a function that builds the
reference's own CLIP class with random weights of the chosen size (the real one downloads OpenAI
weights). The reference's ``build_gen`` hard-codes the CLIP width 768, so its ``GEN`` class is
constructed directly with the CLIP width of the chosen size.

Sizes: ``tiny`` (ResNet-18, d=64, 1 encoder + 2 + 2 decoder layers, 8 queries, a 2-layer ViT of width
128 on 64-px inputs; seconds on a CPU) and ``paper`` (ResNet-50, d=256, 6 + 3 + 3 layers, 64 queries,
ViT-B/32; random weights; 15 minutes on a shared 2-core CPU, mostly encoding the 600 prompts).

Usage::

    git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/hoiclip_ref
    python benchmarks/compare_reference_model.py --ref-dir /tmp/hoiclip_ref --size tiny
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

SIZES = {
    "tiny": dict(backbone="resnet18", hidden_dim=64, nheads=4, dim_feedforward=128, enc_layers=1, dec_layers=2,
                 num_queries=8, clip=dict(embed_dim=64, image_resolution=64, vision_layers=2, vision_width=128,
                                          vision_patch_size=16, transformer_width=128, transformer_heads=2,
                                          transformer_layers=2)),
    "paper": dict(backbone="resnet50", hidden_dim=256, nheads=8, dim_feedforward=2048, enc_layers=6, dec_layers=3,
                  num_queries=64, clip=dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                                            vision_patch_size=32, transformer_width=512, transformer_heads=8,
                                            transformer_layers=12)),
}


def import_reference(ref_dir: Path):
    """Import the reference modules from ``ref_dir`` (with the three ``sys.modules`` shims)."""
    import packaging.version

    if "pkg_resources" not in sys.modules:
        shim = types.ModuleType("pkg_resources")
        shim.packaging = packaging  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    sys.path.insert(0, str(ref_dir))
    import ModifiedCLIP.clip as ref_clip  # the reference's CLIP loader/tokenizer

    sys.modules.setdefault("clip", ref_clip)
    from models import backbone as ref_backbone
    from models import position_encoding as ref_pos
    from models.models_hoiclip import gen as ref_gen
    from models.models_hoiclip import hoiclip as ref_hoiclip
    from ModifiedCLIP import model as ref_clip_model
    from util import misc as ref_misc

    return types.SimpleNamespace(clip=ref_clip, clip_model=ref_clip_model, backbone=ref_backbone, pos=ref_pos,
                                 gen=ref_gen, hoiclip=ref_hoiclip, misc=ref_misc)


def register_open_clip_config(name: str, clip: dict) -> None:
    """An open_clip architecture equal to the reference's CLIP of these sizes (QuickGELU, OpenAI head rule)."""
    import open_clip

    open_clip.factory._MODEL_CONFIGS[name] = {
        "embed_dim": clip["embed_dim"],
        "quick_gelu": True,
        "vision_cfg": {"image_size": clip["image_resolution"], "layers": clip["vision_layers"],
                       "width": clip["vision_width"], "head_width": 64, "patch_size": clip["vision_patch_size"]},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": clip["transformer_width"],
                     "heads": clip["transformer_heads"], "layers": clip["transformer_layers"]},
    }


def build_reference(ref, size: dict, verb_file: Path):
    clip_sizes = size["clip"]

    def random_clip_load(name, device="cpu", jit=False, download_root=None):
        model = ref.clip_model.CLIP(clip_sizes["embed_dim"], clip_sizes["image_resolution"],
                                    clip_sizes["vision_layers"], clip_sizes["vision_width"],
                                    clip_sizes["vision_patch_size"], 77, 49408, clip_sizes["transformer_width"],
                                    clip_sizes["transformer_heads"], clip_sizes["transformer_layers"])
        return model.float().eval(), None

    ref.clip.load = random_clip_load
    ref.hoiclip.clip.load = random_clip_load
    args = argparse.Namespace(
        hidden_dim=size["hidden_dim"], position_embedding="sine", lr_backbone=1e-5, masks=False, dilation=False,
        backbone=size["backbone"], clip_model="random", dataset_file="hico", zero_shot_type="default",
        del_unseen=False, no_clip_cls_init=False, clip_embed_dim=clip_sizes["embed_dim"], verb_pth=str(verb_file),
        verb_weight=0.5, with_clip_label=True, fix_clip_label=False, with_obj_clip_label=True, with_mimic=False,
        dec_layers=size["dec_layers"], eval=True,
    )
    backbone = ref.backbone.Backbone(size["backbone"], True, False, False)
    joiner = ref.backbone.Joiner(backbone, ref.pos.build_position_encoding(args))
    joiner.num_channels = backbone.num_channels
    transformer = ref.gen.GEN(
        d_model=size["hidden_dim"], nhead=size["nheads"], num_encoder_layers=size["enc_layers"],
        num_dec_layers=size["dec_layers"], dim_feedforward=size["dim_feedforward"], dropout=0.0,
        normalize_before=False, num_inter_dec_layrs=size["dec_layers"], return_intermediate_dec=True,
        num_queries=size["num_queries"], clip_dim=clip_sizes["vision_width"],
    )
    return ref.hoiclip.HOICLIP(joiner, transformer, num_queries=size["num_queries"], aux_loss=True, args=args)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Fresh random values for every float parameter and frozen-BN buffer (logit scales keep their init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.state_dict(keep_vars=True).items()):
            if not tensor.is_floating_point() or name.startswith("verb2hoi_proj") or name.endswith("logit_scale"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05)
            elif tensor.dim() <= 1:
                tensor.copy_(1.0 + torch.randn(tensor.shape, generator=gen) * 0.05 if "norm" in name or "ln" in name
                             or "bn" in name or name.endswith(".weight") and "downsample.1" in name
                             else torch.randn(tensor.shape, generator=gen) * 0.05)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in ** 0.5)


def padded_batch(size_name: str, size: dict, batch: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The compared batch: ``images`` ``[B, 3, H, W]`` (image 1 smaller, zero padding at bottom/right),
    ``mask`` ``[B, H, W]`` (True on padding) and ``clip_images`` ``[B, 3, S, S]``, from ``seed + 1``."""
    gen = torch.Generator().manual_seed(seed + 1)
    side = 64 if size_name == "tiny" else 320
    images = torch.randn(batch, 3, side, side + side // 2, generator=gen)
    mask = torch.zeros(batch, side, side + side // 2, dtype=torch.bool)
    if batch > 1:
        mask[1, side * 3 // 4:, :] = True
        mask[1, :, side:] = True
        images[1][:, mask[1]] = 0.0
    res = size["clip"]["image_resolution"]
    return images, mask, torch.randn(batch, 3, res, res, generator=gen)


def print_differences(title: str, pairs: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Print, per output, its shape, the largest ``|ours - reference|`` and the largest ``|reference|``."""
    width = max(18, max(map(len, pairs)) + 2)
    print(f"\n{title}; {describe_machine()}")
    print(f"{'output':<{width}} {'shape':<18} {'max |ours - ref|':>17} {'max |ref|':>10}")
    for name, (a, b) in pairs.items():
        diff = (a.float() - b.float()).abs().max().item()
        print(f"{name:<{width}} {str(tuple(a.shape)):<18} {diff:>17.3e} {b.float().abs().max().item():>10.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref-dir", required=True, type=Path, help="external copy of the reference repository")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    size = SIZES[args.size]

    from hoiclip_lightning.interop import load_official_state_dict
    from hoiclip_lightning.models import HOICLIPConfig
    from hoiclip_lightning.models.hoiclip import HOICLIP
    from hoiclip_lightning.vocabulary import HOIVocabulary

    ref = import_reference(args.ref_dir.resolve())
    vocab = HOIVocabulary.builtin("hico_det")
    with tempfile.TemporaryDirectory() as tmp:
        verb_file = Path(tmp) / "verb.pth"
        torch.save(torch.nn.functional.normalize(torch.randn(vocab.num_verbs, size["clip"]["embed_dim"]), dim=-1),
                   verb_file)
        reference = build_reference(ref, size, verb_file)
    reference.eval()
    randomise(reference, args.seed)
    # the reference keeps the normalised HOI prompt embeddings as a plain tensor computed at construction;
    # recompute it with the randomised CLIP through the reference's own method
    with torch.no_grad():
        hoi_text = reference.init_classifier_with_CLIP(ref.hoiclip.hico_text_label, ref.hoiclip.hico_obj_text_label,
                                                       ref.hoiclip.hico_unseen_index)[0]
    reference.transformer.hoi_cls = hoi_text / hoi_text.norm(dim=-1, keepdim=True)

    clip_name = f"hoiclip-compare-{args.size}"
    register_open_clip_config(clip_name, size["clip"])
    config = HOICLIPConfig(
        backbone=size["backbone"], hidden_dim=size["hidden_dim"], nheads=size["nheads"],
        dim_feedforward=size["dim_feedforward"], dropout=0.0, enc_layers=size["enc_layers"],
        dec_layers=size["dec_layers"], inter_dec_layers=size["dec_layers"], inter_nheads=size["nheads"],
        num_queries=size["num_queries"], clip_model=clip_name, verb_weight=0.5,
        # the reference lets the padding of image 1 reach its scores; our default masks it (equal at batch 1)
        padding_invariant=False,
    )
    ours = HOICLIP(vocab, config=config).eval()
    report = load_official_state_dict(ours, reference.state_dict(), source=f"reference model ({args.size})")
    print(report.summary())

    images, mask, clip_images = padded_batch(args.size, size, args.batch, args.seed)

    with torch.no_grad():
        theirs = reference(ref.misc.NestedTensor(images, mask), is_training=False, clip_input=clip_images)
        mine = ours(images, mask, clip_images, all_classes=True)
    pairs = {
        "hoi_logits": (mine.hoi_logits, theirs["pred_hoi_logits"]),
        "obj_logits": (mine.obj_logits, theirs["pred_obj_logits"]),
        "sub_boxes": (mine.sub_boxes, theirs["pred_sub_boxes"]),
        "obj_boxes": (mine.obj_boxes, theirs["pred_obj_boxes"]),
        "clip_logits": (mine.clip_logits, theirs["clip_logits"].squeeze(1)),
        "hoi_features": (mine.hoi_features, theirs["hoi_feature"]),
    }
    for i, aux in enumerate(mine.aux or []):
        pairs[f"aux{i}.hoi_logits"] = (aux.hoi_logits, theirs["aux_outputs"][i]["pred_hoi_logits"])
        pairs[f"aux{i}.sub_boxes"] = (aux.sub_boxes, theirs["aux_outputs"][i]["pred_sub_boxes"])
    print_differences(f"size={args.size} batch={args.batch} images {tuple(images.shape)} (image 1 padded)", pairs)


if __name__ == "__main__":
    main()
