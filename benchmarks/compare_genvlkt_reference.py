"""Compare our GENVLKT with the reference GEN-VLKT implementation, given the same random weights.

The reference model is built from an external copy of the public repository (``--ref-dir``; e.g. ``git
archive`` of github.com/YueLiao/gen-vlkt into /tmp). Nothing of it is copied here: this script imports it,
gives it random weights, converts its state dict with
:func:`hoiclip_lightning.interop.load_genvlkt_state_dict` into our :class:`GENVLKT`, runs both on the same
padded batch and prints the largest absolute differences of the outputs, of the mimic features and of the
mimic loss (the reference's ``SetCriterionHOI.mimic_loss`` against ours).

The reference needs OpenAI's ``clip`` package, which only serves it a CLIP model: a ``clip`` module is put in
``sys.modules`` whose ``tokenize`` is open_clip's (the same BPE and 77-token context) and whose ``load``
returns one random open_clip CLIP of the chosen size with QuickGELU (OpenAI's architecture); the same
weights are then loaded into our model's CLIP. Two more shims, without editing the reference files: ``cv2``
(imported by its evaluators, unused here) and two private torchvision names its ``util/misc.py`` imports
because it misreads torchvision versions >= 0.10 as older than 0.7.

Sizes (``--size``): ``tiny`` (ResNet-18, d=64, 1 encoder + 2 + 2 decoder layers, 8 queries, a 2-layer ViT of
width 128 on 64-px inputs; seconds on a CPU) and ``paper`` (ResNet-50, d=256, 6 + 3 + 3 layers, 64 queries,
ViT-B/32; random weights). ``--zero-shot rare_first`` also compares the zero-shot evaluation head.

Usage::

    git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/genvlkt_ref
    python benchmarks/compare_genvlkt_reference.py --ref-dir /tmp/genvlkt_ref --size tiny
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_reference_model import (  # noqa: E402
    SIZES,
    padded_batch,
    print_differences,
    randomise,
    register_open_clip_config,
)


def import_reference(ref_dir: Path, clip_name: str, seed: int):
    """Import the reference's model modules from ``ref_dir`` with the shims; returns them and the shared CLIP."""
    import open_clip
    import torchvision.ops
    import torchvision.ops.misc

    torch.manual_seed(seed)
    shared_clip = open_clip.create_model(clip_name, pretrained=None).float().eval()
    clip_shim = types.ModuleType("clip")
    clip_shim.tokenize = lambda texts, context_length=77: open_clip.tokenize(texts, context_length)
    clip_shim.load = lambda name, device="cpu", jit=False, download_root=None: (shared_clip, None)
    sys.modules["clip"] = clip_shim
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    for module, name in ((torchvision.ops, "_new_empty_tensor"), (torchvision.ops.misc, "_output_size")):
        if not hasattr(module, name):
            setattr(module, name, None)
    sys.path.insert(0, str(ref_dir))
    from models import backbone as ref_backbone
    from models import gen as ref_gen
    from models import gen_vlkt as ref_gen_vlkt
    from models import matcher as ref_matcher
    from models import position_encoding as ref_pos
    from util import misc as ref_misc

    ns = types.SimpleNamespace(backbone=ref_backbone, gen=ref_gen, gen_vlkt=ref_gen_vlkt, matcher=ref_matcher,
                               pos=ref_pos, misc=ref_misc)
    return ns, shared_clip


def build_reference(ref, size: dict, zero_shot: str):
    args = argparse.Namespace(
        hidden_dim=size["hidden_dim"], position_embedding="sine", lr_backbone=1e-5, masks=False, dilation=False,
        backbone=size["backbone"], clip_model="random", dataset_file="hico", zero_shot_type=zero_shot,
        del_unseen=zero_shot != "default", clip_embed_dim=size["clip"]["embed_dim"], with_clip_label=True,
        with_obj_clip_label=True, with_mimic=True, dec_layers=size["dec_layers"], eval=True, alpha=0.5,
        set_cost_obj_class=1, set_cost_verb_class=1, set_cost_bbox=2.5, set_cost_giou=1, set_cost_hoi=1,
    )
    backbone = ref.backbone.Backbone(size["backbone"], True, False, False)
    joiner = ref.backbone.Joiner(backbone, ref.pos.build_position_encoding(args))
    joiner.num_channels = backbone.num_channels
    transformer = ref.gen.GEN(
        d_model=size["hidden_dim"], nhead=size["nheads"], num_encoder_layers=size["enc_layers"],
        num_dec_layers=size["dec_layers"], dim_feedforward=size["dim_feedforward"], dropout=0.0,
        normalize_before=False, return_intermediate_dec=True,
    )
    model = ref.gen_vlkt.GEN_VLKT(joiner, transformer, num_queries=size["num_queries"], aux_loss=True, args=args)
    criterion = ref.gen_vlkt.SetCriterionHOI(80, size["num_queries"], 117, matcher=ref.matcher.build_matcher(args),
                                             weight_dict={}, eos_coef=0.1, losses=["feats_mimic"], args=args)
    return model, criterion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref-dir", required=True, type=Path, help="external copy of the reference repository")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--zero-shot", default="default", help="HICO-DET zero-shot split, e.g. rare_first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    size = SIZES[args.size]

    from hoiclip_lightning.interop import load_genvlkt_state_dict
    from hoiclip_lightning.models import GENVLKT, GENVLKTConfig
    from hoiclip_lightning.models.criterion import mimic_loss
    from hoiclip_lightning.vocabulary import HOIVocabulary

    clip_name = f"genvlkt-compare-{args.size}"
    register_open_clip_config(clip_name, size["clip"])
    ref, shared_clip = import_reference(args.ref_dir.resolve(), clip_name, args.seed)
    reference, ref_criterion = build_reference(ref, size, args.zero_shot)
    reference.eval()
    randomise(reference, args.seed)

    config = GENVLKTConfig(
        backbone=size["backbone"], hidden_dim=size["hidden_dim"], nheads=size["nheads"],
        dim_feedforward=size["dim_feedforward"], dropout=0.0, enc_layers=size["enc_layers"],
        dec_layers=size["dec_layers"], num_queries=size["num_queries"], clip_model=clip_name, prompt_cache=False,
        padding_invariant=False,  # the reference lets image 1's padding reach its scores; ours masks it by default
    )
    ours = GENVLKT(HOIVocabulary.builtin("hico_det"), zero_shot=args.zero_shot, config=config).eval()
    ours.clip.model.load_state_dict(shared_clip.state_dict())  # the reference criterion's CLIP (mimic teacher)
    report = load_genvlkt_state_dict(ours, reference.state_dict(), source=f"reference GEN-VLKT ({args.size})")
    print(report.summary())

    images, mask, clip_images = padded_batch(args.size, size, args.batch, args.seed)

    with torch.no_grad():
        theirs = reference(ref.misc.NestedTensor(images, mask), is_training=False)
        mine = ours(images, mask, clip_images, all_classes=True)
        targets = [{"clip_inputs": img} for img in clip_images]
        their_target = ref_criterion.clip_model.encode_image(clip_images)
        their_mimic = ref_criterion.mimic_loss(theirs, targets, None, 1.0)["loss_feat_mimic"]
        our_mimic = mimic_loss(mine.mimic_features, mine.mimic_target)
    pairs = {
        "hoi_logits": (mine.hoi_logits, theirs["pred_hoi_logits"]),
        "obj_logits": (mine.obj_logits, theirs["pred_obj_logits"]),
        "sub_boxes": (mine.sub_boxes, theirs["pred_sub_boxes"]),
        "obj_boxes": (mine.obj_boxes, theirs["pred_obj_boxes"]),
        "mimic_features": (mine.mimic_features, theirs["inter_memory"]),
        "mimic_target": (mine.mimic_target, their_target),
        "loss_feat_mimic": (our_mimic, their_mimic),
    }
    for i, aux in enumerate(mine.aux or []):
        their_aux = theirs["aux_outputs"][i]
        pairs[f"aux{i}.hoi_logits"] = (aux.hoi_logits, their_aux["pred_hoi_logits"])
        pairs[f"aux{i}.obj_boxes"] = (aux.obj_boxes, their_aux["pred_obj_boxes"])
        pairs[f"aux{i}.mimic_features"] = (aux.mimic_features, their_aux["inter_memory"])
    print_differences(f"size={args.size} zero_shot={args.zero_shot} batch={args.batch} images "
                      f"{tuple(images.shape)} (image 1 padded)", pairs)
    print(f"total time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
