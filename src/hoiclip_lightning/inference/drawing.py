"""Draw detected HOI triplets on an image with PIL.

Each triplet gets one colour: its human box (thin outline, ``person`` tag), its object box (thick
outline, object-name tag) and a line joining the two box centres (open dot on the human end, filled dot
on the object end). A legend in the top-left corner lists ``"<rank>. <verb> <object> <score>"`` in rank
order and the middle of each line carries the rank; without the legend the line carries the whole
caption. Small images are enlarged first (``min_side``) so that text stays legible; line widths and font
size follow the drawn image's size.

Example:
    >>> from PIL import Image
    >>> from hoiclip_lightning.inference.results import HOITriplet
    >>> t = HOITriplet((2, 2, 20, 30), (25, 10, 40, 20), 1, "cup", 3, "hold", 7, "hold cup", 0.9)
    >>> out = draw_triplets(Image.new("RGB", (48, 32)), [t], min_side=64)
    >>> out.size
    (96, 64)
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from .results import HOITriplet

#: high-contrast colours (Okabe-Ito plus extras), cycled over triplets in rank order
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (255, 255, 255), (170, 255, 0), (255, 80, 80),
)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _tag(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: tuple[int, int, int],
         font, bounds: tuple[int, int], pad: int) -> None:
    """A filled caption box whose top-left corner is near ``xy``, kept inside the image."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(0.0, xy[0]), bounds[0] - w)
    y = min(max(0.0, xy[1]), bounds[1] - h)
    draw.rectangle((x, y, x + w, y + h), fill=colour)
    draw.text((x + pad - left, y + pad - top), text, fill=_text_colour(colour), font=font)


def draw_triplets(
    image: Image.Image,
    triplets: Sequence[HOITriplet],
    topk: int | None = 5,
    score_threshold: float | None = None,
    min_side: int = 480,
    legend: bool = True,
) -> Image.Image:
    """Return a copy of ``image`` with the best triplets drawn.

    Args:
        image: the original image (the frame of the triplets' pixel boxes).
        triplets: triplets in descending score order (as in :class:`ImageDetections`).
        topk: draw at most this many (``None``: all that pass the threshold).
        score_threshold: skip triplets scoring below it (``None``: no threshold).
        min_side: enlarge the copy so that its short side is at least this many pixels (boxes are scaled
            with it); ``0`` keeps the original size.
        legend: list the drawn captions in the top-left corner.

    Returns:
        An RGB image of the original size times ``max(1, min_side / short side)``.
    """
    kept = [t for t in triplets if score_threshold is None or t.score >= score_threshold]
    if topk is not None:
        kept = kept[:topk]
    canvas = image.convert("RGB")
    scale = max(1.0, min_side / max(1, min(canvas.size))) if min_side else 1.0
    if scale > 1.0:
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.Resampling.BICUBIC)
    else:
        canvas = canvas.copy()
    draw = ImageDraw.Draw(canvas)
    short = min(canvas.size)
    width = max(2, short // 160)
    font = _font(max(11, short // 32))
    pad = max(2, short // 200)
    bounds = canvas.size

    def scaled(box: Sequence[float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)

    captions = []
    # draw the weakest first so that the best triplet ends on top
    for rank in range(len(kept) - 1, -1, -1):
        t = kept[rank]
        colour = PALETTE[rank % len(PALETTE)]
        hb = scaled(t.human_box)
        ob = scaled(t.object_box)
        has_object = ob[2] > ob[0] and ob[3] > ob[1]
        draw.rectangle(hb, outline=colour, width=max(1, width // 2))
        _tag(draw, (hb[0], hb[3] - 1), "person", colour, font, bounds, pad)
        hc = ((hb[0] + hb[2]) / 2, (hb[1] + hb[3]) / 2)
        caption = f"{rank + 1}. {t.label} {t.score:.2f}"
        captions.append((rank, caption, colour))
        if has_object:
            draw.rectangle(ob, outline=colour, width=width)
            _tag(draw, (ob[0], ob[3] - 1), t.object_name, colour, font, bounds, pad)
            oc = ((ob[0] + ob[2]) / 2, (ob[1] + ob[3]) / 2)
            draw.line((hc, oc), fill=colour, width=width)
            r = width * 1.5
            draw.ellipse((hc[0] - r, hc[1] - r, hc[0] + r, hc[1] + r), outline=colour, width=max(1, width // 2))
            draw.ellipse((oc[0] - r, oc[1] - r, oc[0] + r, oc[1] + r), fill=colour)
            mid = ((hc[0] + oc[0]) / 2, (hc[1] + oc[1]) / 2)
        else:
            mid = hc
        # with a legend the line carries only the rank, which keeps crowded images readable
        _tag(draw, mid, f"{rank + 1}" if legend else caption, colour, font, bounds, pad)
    if legend and captions:
        y = float(pad)
        for _, caption, colour in sorted(captions):
            left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
            _tag(draw, (pad, y), caption, colour, font, bounds, pad)
            y += bottom - top + 3 * pad
    return canvas
