"""Speed and memory of HICODetMAP on the real HICO-DET test annotations with synthetic predictions.

Usage:
    python benchmarks/metric_speed.py [ANNOTATIONS_JSON] [--per-image 100] [--batch 8] [--repeats 5]
                                      [--loop-images 600] [--full-loop]

ANNOTATIONS_JSON defaults to ../shared/reference-data/hicodet_instances_test2015.json (relative to the
repository root); it is read in the fredzzhang format (per image ``boxes_h``, ``boxes_o``, ``hoi``); only the
HOI ids and boxes are used. Predictions: ``--per-image`` triplets per image, 60% perturbed GT pairs (70% of
them with the GT class, the rest a random class), 40% random boxes and classes; float32 scores, higher for
the GT-based ones.

Printed:

* per protocol, the wall time of ``update`` over all images (batches of ``--batch``) and of ``compute()``
  (official: Default and Known-Object together), the minimum of ``--repeats`` runs; then the extra memory
  of one more run: peak resident set size above the level just before the first update, sampled every
  millisecond by a thread reading /proc/self/statm (``rss peak``), and the growth of ``ru_maxrss``
  (``maxrss delta``, a lower bound when the process peaked earlier);
* the same time for ``NumpyOfficial``, a plain NumPy evaluator of the official rules (class by class:
  rank, overlaps with the class's GT pairs of each detection's image, claims in rank order), for both
  modes and for Default alone; its runs alternate with HICODetMAP's so that both see the same machine
  load. The script stops if the two disagree on any per-class AP; it prints the ratio of the times;
* a straightforward per-detection Python loop of each protocol, timed on the first ``--loop-images``
  images and extrapolated linearly to all detections (or run on all of them with ``--full-loop``)
  (``--loop-images 0`` skips it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from hoiclip_lightning.metrics import HICODetMAP
from hoiclip_lightning.structures import HOIGroundTruth, HOIPrediction
from hoiclip_lightning.vocabulary import HOIVocabulary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

DEFAULT_ANNOTATIONS = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference-data" / (
    "hicodet_instances_test2015.json"
)
PAGE = os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.base = self.rss()
        self.maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
        self.maxrss_delta = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.maxrss0


def load_targets(path: Path) -> list[HOIGroundTruth]:
    data = json.loads(path.read_text())
    targets = []
    for i, a in enumerate(data["annotation"]):
        n = len(a["hoi"])
        if n:
            h = torch.tensor(a["boxes_h"], dtype=torch.float32).reshape(-1, 4)
            o = torch.tensor(a["boxes_o"], dtype=torch.float32).reshape(-1, 4)
            hoi = torch.tensor(a["hoi"], dtype=torch.long)
            targets.append(HOIGroundTruth(i, h, o, torch.zeros_like(hoi), torch.zeros_like(hoi), hoi))
        else:
            targets.append(HOIGroundTruth.empty(i))
    return targets


def make_predictions(targets: list[HOIGroundTruth], per_image: int, num_hois: int, seed: int) -> list[HOIPrediction]:
    rng = np.random.default_rng(seed)
    preds = []
    for t in targets:
        n_gt = len(t)
        n_pert = int(round(per_image * 0.6)) if n_gt else 0
        boxes = np.empty((per_image, 8), dtype=np.float32)
        cls = rng.integers(0, num_hois, size=per_image)
        scores = rng.random(per_image, dtype=np.float32) * 0.7
        if n_pert:
            src = rng.integers(0, n_gt, size=n_pert)
            gtb = torch.cat([t.sub_boxes, t.obj_boxes], dim=1).numpy()[src]
            wh = np.repeat(np.maximum(gtb[:, 2:4] - gtb[:, 0:2], 1.0), 2, axis=1)
            wh = np.concatenate([wh, np.repeat(np.maximum(gtb[:, 6:8] - gtb[:, 4:6], 1.0), 2, axis=1)], axis=1)
            wh = wh[:, [0, 2, 1, 3, 4, 6, 5, 7]]
            boxes[:n_pert] = gtb + rng.normal(0, 0.12, size=(n_pert, 8)).astype(np.float32) * wh
            keep_cls = rng.random(n_pert) < 0.7
            cls[:n_pert] = np.where(keep_cls, t.hoi_labels.numpy()[src], cls[:n_pert])
            scores[:n_pert] += 0.3
        r = rng.uniform(0, 500, size=(per_image - n_pert, 8)).astype(np.float32)
        r[:, 2:4] = r[:, 0:2] + rng.uniform(10, 200, size=(per_image - n_pert, 2))
        r[:, 6:8] = r[:, 4:6] + rng.uniform(10, 200, size=(per_image - n_pert, 2))
        boxes[n_pert:] = r
        bt = torch.from_numpy(boxes)
        ct = torch.from_numpy(cls.astype(np.int64))
        preds.append(HOIPrediction(t.image_id, bt[:, :4].clone(), bt[:, 4:].clone(), torch.zeros_like(ct),
                                   torch.zeros_like(ct), ct, torch.from_numpy(scores)))
    return preds


# ------------------------------------------------------------------------------- straightforward loops
def _round(x: float) -> float:
    return math.copysign(math.floor(abs(x) + 0.5), x)


def _iou_off(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw > 0 and ih > 0:
        return iw * ih / ((a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih)
    return 0.0


def _iou_ref(g, d) -> float:
    s = (g[2] - g[0] + 1) * (g[3] - g[1] + 1) + (d[2] - d[0] + 1) * (d[3] - d[1] + 1)
    left, right, top, bottom = max(g[1], d[1]), min(g[3], d[3]), max(g[0], d[0]), min(g[2], d[2])
    if left >= right or top >= bottom:
        return 0.0
    inter = (right - left + 1) * (bottom - top + 1)
    return float(inter / (s - inter))


def _ap11(tp: list[int], npos: int, thresholds) -> float:
    ctp = np.cumsum(tp)
    rec = ctp / npos
    prec = ctp / np.arange(1, len(tp) + 1)
    ap = 0.0
    for t in thresholds:
        m = rec >= t
        ap += (prec[m].max() if m.any() else 0.0) / 11.0
    return ap


def loop_official(preds, targets, num_hois, rare, cap=19999) -> dict[str, float]:
    thresholds = [k * 0.1 if k < 5 else 1 - (10 - k) * 0.1 for k in range(11)]
    gt_by = {}
    npos = np.zeros(num_hois, dtype=np.int64)
    for t in targets:
        for j, c in enumerate(t.hoi_labels.tolist()):
            gt_by.setdefault((t.image_id, c), []).append(t.sub_boxes[j].tolist() + t.obj_boxes[j].tolist())
            npos[c] += 1
    dets = [[] for _ in range(num_hois)]
    for p in preds:
        for s, c, h, o in zip(p.scores.tolist(), p.hoi_labels.tolist(), p.sub_boxes.tolist(), p.obj_boxes.tolist(),
                              strict=True):
            dets[c].append((-s, p.image_id, h + o))
    aps = np.zeros(num_hois)
    for c in range(num_hois):
        if npos[c] == 0:
            aps[c] = np.nan
            continue
        ds = sorted(dets[c], key=lambda d: d[0])[:cap]
        matched = set()
        tp = []
        for _, img, box in ds:
            box = [_round(v) for v in box]
            ovmax, jmax = -1.0, -1
            for j, g in enumerate(gt_by.get((img, c), ())):
                ov = min(_iou_off(box[:4], g[:4]), _iou_off(box[4:], g[4:]))
                if ov > ovmax:
                    ovmax, jmax = ov, j
            ok = ovmax >= 0.5 and (img, jmax) not in matched
            if ok:
                matched.add((img, jmax))
            tp.append(int(ok))
        aps[c] = _ap11(tp, npos[c], thresholds) if tp else 0.0
    has = ~np.isnan(aps)
    rm = np.isin(np.arange(num_hois), rare)
    return {"mAP_full": 100 * aps[has].mean(), "mAP_rare": 100 * aps[has & rm].mean(),
            "mAP_non_rare": 100 * aps[has & ~rm].mean()}


def loop_reference(preds, targets, num_hois, rare, topk=100) -> dict[str, float]:
    gts = {t.image_id: t for t in targets}
    sum_gts = np.zeros(num_hois, dtype=np.int64)
    for t in targets:
        for c in t.hoi_labels.tolist():
            sum_gts[c] += 1
    tps = [[] for _ in range(num_hois)]
    scs = [[] for _ in range(num_hois)]
    for p in sorted(preds, key=lambda p: p.image_id):
        t = gts[p.image_id]
        g_h = t.sub_boxes.numpy()
        g_o = t.obj_boxes.numpy()
        g_c = t.hoi_labels.tolist()
        sc = p.scores.numpy()
        order = sorted(range(len(p)), key=lambda k: sc[k], reverse=True)[:topk]
        ph, po, pc = p.sub_boxes.numpy(), p.obj_boxes.numpy(), p.hoi_labels.tolist()
        vis = set()
        for k in order:
            c = pc[k]
            if sum_gts[c] == 0:
                continue
            best, bj = 0.0, None
            for j in range(len(g_c)):
                if g_c[j] != c:
                    continue
                ih, io = _iou_ref(g_h[j], ph[k]), _iou_ref(g_o[j], po[k])
                if ih >= 0.5 and io >= 0.5 and min(ih, io) > best:
                    best, bj = min(ih, io), j
            ok = bj is not None and bj not in vis
            if ok:
                vis.add(bj)
            tps[c].append(int(ok))
            scs[c].append(sc[k])
    aps = np.full(num_hois, np.nan)
    counted = np.zeros(num_hois, dtype=bool)
    for c in range(num_hois):
        if sum_gts[c] == 0:
            continue
        if not tps[c]:
            aps[c] = 0.0
            continue
        o = np.argsort(-np.array(scs[c]))
        aps[c] = _ap11(list(np.array(tps[c])[o]), sum_gts[c], np.arange(0, 1.1, 0.1))
        counted[c] = True
    rm = np.isin(np.arange(num_hois), rare)
    return {"mAP_full": 100 * np.nanmean(aps), "mAP_rare": 100 * aps[counted & rm].mean(),
            "mAP_non_rare": 100 * aps[counted & ~rm].mean()}


# ------------------------------------------------------------------------------- plain NumPy baseline
def _round_matlab(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round`` (halves away from zero); exact for the float32 values this benchmark produces."""
    return np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))


def _iou_rows(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Row-wise IoU of rounded detections and GT boxes, ``+1`` pixel convention, float64."""
    iw = np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]) + 1.0
    ih = np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]) + 1.0
    inter = iw * ih
    union = (det[:, 2] - det[:, 0] + 1.0) * (det[:, 3] - det[:, 1] + 1.0) + (gt[:, 2] - gt[:, 0] + 1.0) * (
        gt[:, 3] - gt[:, 1] + 1.0) - inter
    ok = (iw > 0) & (ih > 0)
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


class NumpyOfficial:
    """A plain NumPy evaluator of the official rules (Default and Known-Object), for timing.

    ``update`` keeps each batch's arrays. ``compute`` follows the MATLAB code class by class: rank the
    class's detections (stable descending score, at most ``cap``); compute, in one vectorised step per
    class, the overlap of every detection with every GT pair of its class in its image and each
    detection's best pair (the first of the largest overlap); then walk the detections in rank order, each
    claiming its best pair if the overlap reaches the threshold and the pair is still unclaimed.
    Known-Object runs the same evaluation again on the detections of images where the class's object is
    annotated.
    """

    def __init__(self, num_hois: int, hoi_to_object: np.ndarray, cap: int = 19999, iou_threshold: float = 0.5):
        self.num_hois, self.h2o, self.cap, self.thr = num_hois, np.asarray(hoi_to_object), cap, iou_threshold
        self.det: list[tuple[np.ndarray, ...]] = []
        self.gt: list[tuple[np.ndarray, ...]] = []

    def update(self, preds: list[HOIPrediction], targets: list[HOIGroundTruth]) -> None:
        self.det.append((
            np.repeat([p.image_id for p in preds], [len(p) for p in preds]),
            np.concatenate([torch.cat([p.sub_boxes, p.obj_boxes], 1).numpy() for p in preds]).astype(np.float64),
            np.concatenate([p.scores.numpy() for p in preds]).astype(np.float64),
            np.concatenate([p.hoi_labels.numpy() for p in preds]),
        ))
        self.gt.append((
            np.repeat([t.image_id for t in targets], [len(t) for t in targets]),
            np.concatenate([torch.cat([t.sub_boxes, t.obj_boxes], 1).numpy() for t in targets]).astype(np.float64),
            np.concatenate([t.hoi_labels.numpy() for t in targets]),
        ))

    def compute(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Returns ``(ap, ap_ko, seconds of the Known-Object pass)``; APs are NaN for classes without GT."""
        img, boxes, score, cls = (np.concatenate(c) for c in zip(*self.det, strict=True))
        g_img, g_boxes, g_cls = (np.concatenate(c) for c in zip(*self.gt, strict=True))
        boxes = _round_matlab(boxes)
        npos = np.bincount(g_cls, minlength=self.num_hois)
        g_order = np.lexsort((g_img, g_cls))  # GT by class, then image (annotation order inside)
        g_bounds = np.searchsorted(g_cls[g_order], np.arange(self.num_hois + 1))
        known = np.zeros((int(self.h2o.max()) + 1, int(max(img.max(), g_img.max())) + 1), dtype=bool)
        known[self.h2o[g_cls], g_img] = True  # object -> images where it is annotated
        order = np.lexsort((-score, cls))  # by class, then descending score; stable
        bounds = np.searchsorted(cls[order], np.arange(self.num_hois + 1))
        args = (order, bounds, img, boxes, npos, g_order, g_bounds, g_img, g_boxes)
        ap = self._evaluate(*args, None)
        t0 = time.perf_counter()
        ap_ko = self._evaluate(*args, known)
        return ap, ap_ko, time.perf_counter() - t0

    def _evaluate(self, order, bounds, img, boxes, npos, g_order, g_bounds, g_img, g_boxes, known) -> np.ndarray:
        thresholds = [k * 0.1 if k < 5 else 1 - (10 - k) * 0.1 for k in range(11)]
        ap = np.full(self.num_hois, np.nan)
        for c in range(self.num_hois):
            if npos[c] == 0:
                continue
            ranked = order[bounds[c]:bounds[c + 1]][: self.cap]
            if known is not None:
                ranked = ranked[known[self.h2o[c], img[ranked]]]
            if ranked.size == 0:
                ap[c] = 0.0
                continue
            # every (detection, GT pair of the class in the detection's image)
            g_rows = g_order[g_bounds[c]:g_bounds[c + 1]]
            r_img = img[ranked]
            lo = np.searchsorted(g_img[g_rows], r_img, side="left")
            n = np.searchsorted(g_img[g_rows], r_img, side="right") - lo
            det_of = np.repeat(np.arange(ranked.size), n)
            gt_of = g_rows[np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())]
            d, g = boxes[ranked[det_of]], g_boxes[gt_of]
            ov = np.minimum(_iou_rows(d[:, :4], g[:, :4]), _iou_rows(d[:, 4:], g[:, 4:]))
            # best pair of each detection that has one: the first of its largest overlaps
            has = np.flatnonzero(n)
            best_ov = np.maximum.reduceat(ov, np.cumsum(n)[has] - n[has]) if has.size else np.zeros(0)
            at_max = np.flatnonzero(ov == np.repeat(best_ov, n[has]))
            _, first = np.unique(det_of[at_max], return_index=True)
            best_gt = gt_of[at_max[first]]
            # claims, in rank order
            tp = np.zeros(ranked.size, dtype=bool)
            claimed = set()
            for k, gt_row, o in zip(has.tolist(), best_gt.tolist(), best_ov.tolist(), strict=True):
                if o >= self.thr and gt_row not in claimed:
                    claimed.add(gt_row)
                    tp[k] = True
            ctp = np.cumsum(tp)
            rec = ctp / npos[c]
            prec = ctp / np.arange(1, ranked.size + 1)
            ap[c] = sum((prec[rec >= t].max() if (rec >= t).any() else 0.0) / 11.0 for t in thresholds)
        return ap


# ------------------------------------------------------------------------------- timing
def run_metric(protocol, vocab, preds, targets, batch):
    metric = HICODetMAP(vocab, protocol=protocol)
    t0 = time.perf_counter()
    for i in range(0, len(preds), batch):
        metric.update(preds[i:i + batch], targets[i:i + batch])
    t1 = time.perf_counter()
    res = metric.compute()
    return res, t1 - t0, time.perf_counter() - t1


def run_baseline(vocab, preds, targets, batch):
    base = NumpyOfficial(vocab.num_hois, vocab.hoi_to_object().numpy())
    t0 = time.perf_counter()
    for i in range(0, len(preds), batch):
        base.update(preds[i:i + batch], targets[i:i + batch])
    t1 = time.perf_counter()
    ap, ap_ko, t_ko = base.compute()
    total = time.perf_counter() - t0
    # time of the Default mode alone: everything but the Known-Object pass
    return ap, ap_ko, t1 - t0, total - t_ko, total


def memory(protocol, vocab, preds, targets, batch) -> RssSampler:
    with RssSampler() as mem:
        run_metric(protocol, vocab, preds, targets, batch)
    return mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("annotations", nargs="?", default=str(DEFAULT_ANNOTATIONS))
    ap.add_argument("--per-image", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each; the minimum is reported")
    ap.add_argument("--loop-images", type=int, default=600, help="0: skip the per-detection loops")
    ap.add_argument("--full-loop", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(min(2, torch.get_num_threads()))
    vocab = HOIVocabulary.builtin("hico_det")
    targets = load_targets(Path(args.annotations))
    preds = make_predictions(targets, args.per_image, vocab.num_hois, args.seed)
    n_det = sum(len(p) for p in preds)
    n_gt = sum(len(t) for t in targets)
    print("machine:", describe_machine())
    print(f"{len(targets)} images, {n_gt} GT pairs, {n_det} predicted triplets, batches of {args.batch}; "
          f"times are the minimum of {args.repeats} runs (HICODetMAP and the plain NumPy evaluator alternate); "
          "NumPy makes no threaded calls here")

    # ours and the baseline alternate, so that both see the same machine load
    runs: dict[str, list[tuple[float, ...]]] = {"official": [], "reference": [], "numpy": []}
    full = {}
    for _ in range(args.repeats):
        for protocol in ("official", "reference"):
            res, t_up, t_comp = run_metric(protocol, vocab, preds, targets, args.batch)
            full[protocol] = res
            runs[protocol].append((t_up + t_comp, t_up, t_comp))
        base_ap, base_ko, t_up, t_def, t_all = run_baseline(vocab, preds, targets, args.batch)
        runs["numpy"].append((t_all, t_up, t_def))
    for protocol in ("official", "reference"):
        total, t_up, t_comp = min(runs[protocol])
        mem = memory(protocol, vocab, preds, targets, args.batch)
        res = full[protocol]
        what = "Default + Known-Object" if protocol == "official" else "Default"
        print(f"[{protocol}: {what}] update {t_up:.3f} s + compute {t_comp:.3f} s = {total:.3f} s; "
              f"extra memory: rss peak {(mem.peak - mem.base) / 2**20:.0f} MiB, "
              f"maxrss delta {mem.maxrss_delta / 2**20:.0f} MiB")
        keys = [k for k in res if k.startswith("mAP")]
        print("    " + ", ".join(f"{k} {float(res[k]):.4f}" for k in keys))
    ours = min(runs["official"])[0]
    t_all, t_up, t_def = min(runs["numpy"])
    print(f"[plain NumPy, official rules] Default + Known-Object: update {t_up:.3f} s + compute {t_all - t_up:.3f} s "
          f"= {t_all:.3f} s; Default alone {t_def:.3f} s")
    res = full["official"]
    diff = 0.0
    for sfx, base in (("", base_ap), ("_ko", base_ko)):
        ours_ap = res[f"ap_per_class{sfx}"].numpy()
        diff = max(diff, float(np.nanmax(np.abs(ours_ap - 100 * base))), abs(float(res[f"mAP_full{sfx}"])
                   - 100 * float(np.nanmean(base))))
    print(f"    mAP_full {100 * np.nanmean(base_ap):.4f}, mAP_full_ko {100 * np.nanmean(base_ko):.4f}; "
          f"max |HICODetMAP - NumPy| over per-class APs and mAPs = {diff:.1e}")
    if diff > 1e-9:
        raise SystemExit("HICODetMAP and the plain NumPy evaluator disagree")
    print(f"ratio (plain NumPy / HICODetMAP, official Default + Known-Object): {t_all / ours:.2f}; "
          f"plain NumPy Default alone / HICODetMAP Default + Known-Object: {t_def / ours:.2f}")

    if args.loop_images <= 0:
        return
    n_loop = len(targets) if args.full_loop else min(args.loop_images, len(targets))
    sub_p, sub_t = preds[:n_loop], targets[:n_loop]
    sub_det = sum(len(p) for p in sub_p)
    for protocol, fn in (("official", loop_official), ("reference", loop_reference)):
        t0 = time.perf_counter()
        loop_res = fn(sub_p, sub_t, vocab.num_hois, vocab.rare_hois)
        dt = time.perf_counter() - t0
        if n_loop == len(targets):
            vec = full[protocol]
            note = f"{dt:.1f} s on all {n_det} triplets"
        else:
            m = HICODetMAP(vocab, protocol=protocol)
            for i in range(0, n_loop, args.batch):
                m.update(sub_p[i:i + args.batch], sub_t[i:i + args.batch])
            vec = m.compute()
            note = (f"{dt:.1f} s on the first {n_loop} images ({sub_det} triplets), "
                    f"extrapolated {dt * n_det / sub_det:.0f} s for all")
        diff = max(abs(float(vec[k]) - loop_res[k]) for k in loop_res)
        print(f"[{protocol} loop] {note}; Default mAPs " + ", ".join(f"{k} {v:.4f}" for k, v in loop_res.items())
              + f"; max |vectorised - loop| = {diff:.2e}")


if __name__ == "__main__":
    main()
