"""Compare ``HICODetMAP(protocol="reference")`` with HOICLIP's own python evaluator on synthetic predictions.

The reference evaluator (``datasets/datasets_gen/hico_eval_triplet.py`` of github ``Artanic30/HOICLIP``) is
*not* part of this project. Put a copy of it somewhere outside the repository together with the two modules
it imports, and install its ``threadpool`` dependency next to it (not into the project)::

    REF=/tmp/refeval; G=<git dir of Artanic30/HOICLIP>
    mkdir -p $REF/datasets $REF/util && touch $REF/datasets/__init__.py $REF/util/__init__.py
    git --git-dir=$G show HEAD:datasets/datasets_gen/hico_eval_triplet.py > $REF/hico_eval_triplet.py
    git --git-dir=$G show HEAD:datasets/hico_text_label.py > $REF/datasets/hico_text_label.py
    git --git-dir=$G show HEAD:util/topk.py > $REF/util/topk.py
    pip install --target $REF/site threadpool

    python benchmarks/compare_reference_evaluator.py --ref-dir $REF --ref-site $REF/site \\
        --annotations ../shared/reference-data/hicodet_instances_test2015.json [--nms] [--max-images N]

The reference code is imported only at run time, from ``--ref-dir``. Its ``import cv2`` is satisfied by an
empty stand-in module when OpenCV is not installed (cv2 is only used by ``clip_preds_boxes``, never called).

Inputs shared by both sides, per image (seeded):
    * ``Q`` queries with normalised cxcywh human/object boxes (the first ones jittered copies of the GT pairs,
      the rest random), object logits ``[Q, 81]`` and HOI probabilities ``[Q, 600]``;
    * pixel xyxy boxes computed exactly as :class:`HOIPostProcessor` computes them, so both sides see the
      same float32 boxes; object probabilities = ``sigmoid(obj_logits)``.
    * a few HOI classes get probability 0 everywhere, so they never reach a top 100: this exercises the
      "class with GT but no detection" rule.
    * the top-101 candidate scores of every image are made distinct (the reference's heap top-k duplicates
      tied candidates, a documented quirk we do not reproduce), and the benchmark reports how many equal
      scores remain within a class across images (the reference appends from 20 threads, so the order of
      such ties is not reproducible).

Reference side: the per-image dicts ``PostProcessHOITriplet`` emits (``boxes`` ``[2Q, 4]``, ``hoi_scores``,
``obj_scores``, ``sub_ids``, ``obj_ids``) and the test-set targets (``boxes``, ``labels``, ``hois`` rows
``(subject box, object box, verb)``); the rare / non-rare triplet lists are passed in as the reference
dataset's ``set_rare_hois`` would build them from a training file whose per-triplet counts make exactly the
annotation file's 138 rare classes rare (tuples ``(0, object, verb)`` in the reference's contiguous ids).

Our side: :class:`HOIPostProcessor` (``use_nms`` as ``--nms``) -> :class:`HICODetMAP` (``protocol="reference"``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from hoiclip_lightning.metrics.hico_det import HICODetMAP
from hoiclip_lightning.models.postprocess import HOIPostProcessor
from hoiclip_lightning.structures import HOIGroundTruth, HOIOutputs

VOCAB = Path(__file__).resolve().parents[1] / "src/hoiclip_lightning/resources/hico_det_vocabulary.json"


def load_reference(ref_dir: Path, ref_site: Path | None):
    """Import ``hico_eval_triplet.HICOEvaluator`` from the copy in ``ref_dir`` (run time only)."""
    if ref_site is not None:
        sys.path.insert(0, str(ref_site))
    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.modules["cv2"] = types.ModuleType("cv2")  # only clip_preds_boxes uses it; never called here

    def load(name: str, path: Path, package: bool = False):
        spec = importlib.util.spec_from_file_location(
            name, path, submodule_search_locations=[str(path.parent)] if package else None
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    # the reference's own package names ("datasets", "util"), bound to the copy, whatever else is installed
    for pkg in ("datasets", "util"):
        init = ref_dir / pkg / "__init__.py"
        if init.exists():
            load(pkg, init, package=True)
        else:
            mod = types.ModuleType(pkg)
            mod.__path__ = [str(ref_dir / pkg)]
            sys.modules[pkg] = mod
    load("datasets.hico_text_label", ref_dir / "datasets/hico_text_label.py")
    load("util.topk", ref_dir / "util/topk.py")
    return load("hico_eval_triplet", ref_dir / "hico_eval_triplet.py").HICOEvaluator


def make_inputs(anno: dict, vocab: dict, num_images: int, num_queries: int, seed: int, dead_classes: list[int]):
    """Synthetic raw outputs per image (torch float32), plus GT in pixel boxes."""
    gen = torch.Generator().manual_seed(seed)
    hois = torch.tensor(vocab["hois"])  # [600, 2] (verb, object), contiguous COCO-order object ids
    hoi_to_verb, hoi_to_object = hois[:, 0], hois[:, 1]
    num_hois, num_obj = hois.shape[0], len(vocab["objects"])
    images = []
    for i in range(num_images):
        a = anno["annotation"][i]
        w, h = anno["size"][i]  # (width, height)
        bh = torch.tensor(a["boxes_h"], dtype=torch.float32).reshape(-1, 4)
        bo = torch.tensor(a["boxes_o"], dtype=torch.float32).reshape(-1, 4)
        gt_hoi = torch.tensor(a["hoi"], dtype=torch.long)
        m = gt_hoi.numel()
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        q = num_queries
        # random boxes: cx, cy in (0.1, 0.9), w, h in (0.05, 0.6)
        rnd = torch.rand(q, 8, generator=gen)
        sub = torch.cat([0.1 + 0.8 * rnd[:, 0:2], 0.05 + 0.55 * rnd[:, 2:4]], 1)
        obj = torch.cat([0.1 + 0.8 * rnd[:, 4:6], 0.05 + 0.55 * rnd[:, 6:8]], 1)
        hoi_p = torch.rand(q, num_hois, generator=gen) * 0.8  # [Q, 600]
        obj_logits = torch.randn(q, num_obj + 1, generator=gen) * 1.5 - 1.0  # [Q, 81]
        if m:
            # near-GT queries: each GT pair once, some pairs twice (duplicates), jittered boxes
            n_near = min(q // 2, m + (m + 1) // 2)
            src = torch.cat([torch.arange(m), torch.randint(0, m, (n_near,), generator=gen)])[:n_near]
            for k, g in enumerate(src.tolist()):
                for boxes, dst in ((bh, sub), (bo, obj)):
                    c = box_convert(boxes[g : g + 1], "xyxy", "cxcywh")[0] / scale
                    noise = torch.randn(4, generator=gen) * 0.08
                    dst[k, :2] = c[:2] + noise[:2] * c[2:]
                    dst[k, 2:] = (c[2:] * (1 + noise[2:])).clamp(min=1e-3)
                hoi_p[k, gt_hoi[g]] = 0.55 + 0.45 * torch.rand((), generator=gen)
                obj_logits[k, hoi_to_object[gt_hoi[g]]] += 3.0 * torch.rand((), generator=gen)
        hoi_p[:, dead_classes] = 0.0
        images.append(dict(sub=sub, obj=obj, hoi_p=hoi_p, obj_logits=obj_logits, size=(h, w), bh=bh, bo=bo,
                           gt_hoi=gt_hoi))
    return images, hoi_to_verb, hoi_to_object


def break_top_ties(post: HOIPostProcessor, im: dict, gen: torch.Generator) -> int:
    """Perturb HOI probabilities until the 101 best candidate scores of the image are distinct."""
    fixes = 0
    while True:
        s = post.candidate_scores(im["hoi_p"], im["obj_logits"]).flatten()
        top, idx = s.sort(descending=True, stable=True)
        top = top[:101]
        dup = (top[1:] == top[:-1]).nonzero().flatten()
        if dup.numel() == 0:
            return fixes
        flat = idx[dup + 1]
        q, c = flat // im["hoi_p"].shape[1], flat % im["hoi_p"].shape[1]
        im["hoi_p"][q, c] -= 1e-4 * torch.rand(q.numel(), generator=gen)
        fixes += int(dup.numel())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-dir", type=Path, required=True, help="folder with hico_eval_triplet.py, datasets/, util/")
    ap.add_argument("--ref-site", type=Path, default=None, help="extra sys.path entry holding threadpool")
    ap.add_argument("--annotations", type=Path, required=True, help="hicodet_instances_test2015.json")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nms", action="store_true", help="reference --use_nms_filter (0.7, alpha 1, beta 0.5) and ours")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (tiny per-image tensors)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    HICOEvaluator = load_reference(args.ref_dir.resolve(), args.ref_site.resolve() if args.ref_site else None)
    anno = json.loads(args.annotations.read_text())
    vocab = json.loads(VOCAB.read_text())
    n_img = len(anno["annotation"]) if args.max_images is None else min(args.max_images, len(anno["annotation"]))
    rare = sorted(int(c) for c in anno["rare"])
    dead = [rare[0], rare[1], rare[-1]] + [c for c in range(600) if c not in set(rare)][:3]  # 3 rare, 3 non-rare

    t0 = time.time()
    images, hoi_to_verb, hoi_to_object = make_inputs(anno, vocab, n_img, args.queries, args.seed, dead)
    post = HOIPostProcessor(list(range(600)), hoi_to_object, hoi_to_verb, topk=100, use_nms=args.nms)
    gen = torch.Generator().manual_seed(args.seed + 1)
    fixes = sum(break_top_ties(post, im, gen) for im in images)
    print(f"images {n_img}, queries {args.queries}, seed {args.seed}, nms {args.nms}; "
          f"inputs built in {time.time() - t0:.1f} s ({fixes} tied top-101 scores perturbed)")

    # ---- our side
    t0 = time.time()
    metric = HICODetMAP(600, protocol="reference", rare_hois=rare)
    preds_ours, ref_preds, ref_gts = [], [], []
    for i, im in enumerate(images):
        out = HOIOutputs(im["sub"][None], im["obj"][None], im["obj_logits"][None], torch.zeros(1, args.queries, 600))
        pred = post(out, torch.tensor([im["size"]]), [i], hoi_scores=im["hoi_p"][None])[0]
        gt = HOIGroundTruth(i, im["bh"], im["bo"], hoi_to_object[im["gt_hoi"]], hoi_to_verb[im["gt_hoi"]],
                            im["gt_hoi"], im["size"])
        metric.update([pred], [gt])
        preds_ours.append(pred)
    ours = {k: float(v) for k, v in metric.compute().items() if k.startswith("mAP")}
    t_ours = time.time() - t0

    # ---- reference side: what PostProcessHOITriplet emits, boxes computed as our post-processor does
    for i, im in enumerate(images):
        h, w = im["size"]
        scale = torch.tensor([[w, h, w, h]], dtype=torch.float32)
        sub_xyxy = box_convert(im["sub"].float(), "cxcywh", "xyxy") * scale
        obj_xyxy = box_convert(im["obj"].float(), "cxcywh", "xyxy") * scale
        q = args.queries
        ref_preds.append({
            "labels": torch.cat([torch.zeros(q, dtype=torch.long), im["obj_logits"][:, :-1].argmax(-1)]),
            "boxes": torch.cat([sub_xyxy, obj_xyxy]),
            "hoi_scores": im["hoi_p"].float(),
            "obj_scores": im["obj_logits"].float().sigmoid(),
            "sub_ids": torch.arange(q),
            "obj_ids": torch.arange(q, 2 * q),
        })
        m = im["gt_hoi"].numel()
        ref_gts.append({
            "filename": anno["filenames"][i],
            "id": i,
            "boxes": torch.cat([im["bh"], im["bo"]]).reshape(-1, 4),
            "labels": torch.cat([torch.zeros(m, dtype=torch.long), hoi_to_object[im["gt_hoi"]]]),
            "hois": torch.stack([torch.arange(m), torch.arange(m, 2 * m), hoi_to_verb[im["gt_hoi"]]], 1).reshape(-1, 3),
        })
    rare_set = set(rare)
    rare_triplets = [(0, int(hoi_to_object[c]), int(hoi_to_verb[c])) for c in range(600) if c in rare_set]
    non_rare_triplets = [(0, int(hoi_to_object[c]), int(hoi_to_verb[c])) for c in range(600) if c not in rare_set]
    ref_args = argparse.Namespace(zero_shot_type="default", use_nms_filter=args.nms, thres_nms=0.7, nms_alpha=1.0,
                                  nms_beta=0.5, eval_location=False, eval_each_ap=False, output_dir="/tmp",
                                  json_file=str(args.ref_dir / "results.json"))
    t0 = time.time()
    evaluator = HICOEvaluator(ref_preds, ref_gts, rare_triplets, non_rare_triplets, None, ref_args)
    stats = evaluator.evaluate()
    t_ref = time.time() - t0
    ref = {"mAP_full": 100 * stats["mAP"], "mAP_rare": 100 * stats["mAP rare"],
           "mAP_non_rare": 100 * stats["mAP non-rare"]}

    # remaining equal scores within a class across images (reference tie order depends on its threads)
    cls = torch.cat([p.hoi_labels for p in preds_ours]).numpy()
    sc = torch.cat([p.scores for p in preds_ours]).numpy().astype(np.float32)
    pairs = np.unique(np.stack([cls, sc.view(np.int32)], 1), axis=0, return_counts=True)[1]
    n_triplets = int(cls.size)

    print(f"triplets kept by our post-processor: {n_triplets}; equal (class, score) groups: {(pairs > 1).sum()}")
    print(f"classes with GT but no detection (forced): {len(dead)}")
    print(f"{'':12s}{'Full':>10s}{'Rare':>10s}{'Non-rare':>10s}")
    for name, d in (("reference", ref), ("ours", ours)):
        print(f"{name:12s}{d['mAP_full']:10.4f}{d['mAP_rare']:10.4f}{d['mAP_non_rare']:10.4f}")
    diff = max(abs(ref[k] - ours[k]) for k in ref)
    print(f"max |difference| = {diff:.2e} (percent points); time: reference {t_ref:.1f} s, ours {t_ours:.1f} s")


if __name__ == "__main__":
    main()
