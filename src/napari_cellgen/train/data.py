"""Training pairs from (image, mask) arrays: validation, preprocessing and patch sampling."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..segment.preprocess import context_indices, normalize, resize, scaled_shape


class DataError(ValueError):
    """Training data that cannot be used as given; the message says what to change."""


def parse_slices(text: str | None, n: int) -> list[int]:
    """'0-9,40' -> [0..9, 40]; None/'' -> all slices. Checked against ``n`` slices."""
    if not text:
        return list(range(n))
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise DataError(f"cannot read slice list {text!r}: use numbers and ranges like 0-9,40") from None
    bad = [z for z in out if z < 0 or z >= n]
    if bad:
        raise DataError(f"slices {bad} are outside the stack (it has {n} slices, 0-{n - 1})")
    return sorted(set(out))


def as_mask(mask: np.ndarray, where: str = "") -> np.ndarray:
    """Any non-zero value (1, 255, instance ids) is foreground.

    Negative values and fractional values (a probability map or an image given
    as the mask by mistake) are refused with a message that says what to do.
    """
    m = np.asarray(mask)
    if m.dtype.kind not in "uifb":
        raise DataError(f"the mask{where} must be numeric, got dtype {m.dtype}")
    if m.dtype.kind == "f":
        if not np.all(np.isfinite(m)):
            raise DataError(f"the mask{where} contains NaN or infinite values")
        if np.any(m != np.round(m)):
            raise DataError(
                f"the mask{where} has fractional values (a probability map or an image?): "
                "threshold it into a labels/mask layer (0 = background, any other integer = mitochondrion)"
            )
    if m.dtype.kind in "if" and m.size and m.min() < 0:
        raise DataError(f"the mask{where} has negative values: use 0 for background and positive labels")
    return m != 0


def check_pair(image, mask, name: str = "") -> None:
    ishape, mshape = tuple(image.shape), tuple(mask.shape)
    where = f" ({name})" if name else ""
    if np.dtype(image.dtype).kind not in "uif":
        raise DataError(f"the image{where} must be numeric, got dtype {image.dtype}")
    if np.dtype(mask.dtype).kind not in "uifb":
        raise DataError(f"the mask{where} must be a labels/mask array, got dtype {mask.dtype}")
    if ishape != mshape:
        raise DataError(f"image{where} has shape {ishape} but its mask has shape {mshape}: they must match")
    if len(ishape) not in (2, 3):
        raise DataError(f"expected 2D images or ZYX stacks{where}, got shape {ishape}")
    if 0 in ishape:
        raise DataError(f"the image{where} is empty (shape {ishape})")


@dataclass
class Region:
    """One annotated 2D training/validation region at model resolution."""

    planes: np.ndarray  # (C, h, w) float32
    mask: np.ndarray  # (h, w) float32 in [0, 1]
    fg: np.ndarray = field(default=None)  # (K, 2) foreground coordinates
    z: int = 0  # the slice it came from (bookkeeping for the model card)
    pair: int = 0  # the (image, mask) pair it came from
    emphasis: np.ndarray = field(default=None)  # (h, w) float32 in [0, 1]: pixels whose loss counts more


def annotated_slices(mask, slices: list[int] | None) -> list[int]:
    """Slices to train on: those asked for, or else those with any annotation."""
    n = 1 if mask.ndim == 2 else mask.shape[0]
    if slices is not None:
        return slices
    if mask.ndim == 2:
        return [0] if np.any(mask) else []
    return [z for z in range(n) if np.any(np.asarray(mask[z]))]


def build_regions(image, mask, slices, card: dict) -> list[Region]:
    """Normalise, resize and cut (image, mask) slices into :class:`Region` objects."""
    is2d = image.ndim == 2
    n = 1 if is2d else image.shape[0]
    k = int(card.get("context", 0))
    scale = float(card.get("scale", 1.0))
    norm = card.get("normalization", {})
    small = scaled_shape(image.shape[-2:], scale)
    cache: dict[int, np.ndarray] = {}

    def plane(z):
        if z not in cache:
            raw = np.asarray(image if is2d else image[z])
            cache[z] = resize(normalize(raw, norm.get("low", 1.0), norm.get("high", 99.0)), small, "area")
        return cache[z]

    regions = []
    for z in slices:
        planes = np.stack([plane(i) for i in context_indices(z, n, k)])
        m = as_mask(mask if is2d else mask[z], "" if is2d else f" (slice {z})").astype(np.float32)
        m = resize(m, small, "area")
        regions.append(Region(planes, m, z=z))
    return regions


class PatchSampler:
    """Random patches that over-sample foreground (``fg_prob`` of patches are centred on it).

    After :meth:`set_hard`, a further ``hard_prob`` of patches are centred on "hard"
    pixels (those the current model gets wrong: look-alikes of mitochondria, missed
    edges), drawn uniformly over all hard pixels of all regions.
    """

    def __init__(self, regions: list[Region], patch: int, fg_prob: float = 0.5, seed: int = 0,
                 hard_prob: float = 0.0):
        if not regions:
            raise DataError("no annotated slices to train on")
        if not (fg_prob >= 0 and hard_prob >= 0 and fg_prob + hard_prob <= 1.0):
            raise DataError(f"the foreground ({fg_prob}) and hard-example ({hard_prob}) shares must be "
                            "non-negative and add up to at most 1")
        self.regions = regions
        self.patch = patch
        self.fg_prob = fg_prob
        self.hard_prob = hard_prob
        self.hard = np.zeros((0, 3), np.int64)  # (region index, y, x)
        self.rng = np.random.default_rng(seed)
        for r in regions:
            ys, xs = np.nonzero(r.mask > 0.5)
            step = max(1, len(ys) // 20000)
            r.fg = np.stack([ys[::step], xs[::step]], 1) if len(ys) else np.zeros((0, 2), int)
        self.weights = np.array([r.mask.size for r in regions], np.float64)
        self.weights /= self.weights.sum()

    def _crop(self, r: Region, cy: int, cx: int):
        p = self.patch
        h, w = r.mask.shape
        y0 = int(np.clip(cy - p // 2, 0, max(0, h - p)))
        x0 = int(np.clip(cx - p // 2, 0, max(0, w - p)))
        img = r.planes[:, y0 : y0 + p, x0 : x0 + p]
        m = r.mask[None] if not self.emphasized else np.stack([r.mask, self._emphasis(r)])
        m = m[:, y0 : y0 + p, x0 : x0 + p]
        ph, pw = p - m.shape[1], p - m.shape[2]
        if ph or pw:
            mode = "reflect" if min(m.shape[1:]) > max(ph, pw) else "edge"
            img = np.pad(img, ((0, 0), (0, ph), (0, pw)), mode=mode)
            m = np.pad(m, ((0, 0), (0, ph), (0, pw)), mode=mode)
        return img, m

    @staticmethod
    def _emphasis(r: Region) -> np.ndarray:
        return r.emphasis if r.emphasis is not None else np.zeros_like(r.mask)

    @property
    def emphasized(self) -> bool:
        """True when some region has an emphasis map: masks then come with it as a second channel."""
        return any(r.emphasis is not None for r in self.regions)

    def set_emphasis(self, maps: list[np.ndarray]) -> None:
        """Per-region maps (True/1 = the loss there counts more, e.g. the user's corrections)."""
        for r, e in zip(self.regions, maps, strict=True):
            r.emphasis = np.asarray(e, np.float32)

    def set_hard(self, errors: list[np.ndarray], limit: int = 200000) -> int:
        """Hard pixels: one boolean map per region (True = wrong). Returns how many there are."""
        pts = [np.column_stack([np.full(len(ys), i), ys, xs])
               for i, e in enumerate(errors) for ys, xs in [np.nonzero(e)]]
        hard = np.concatenate(pts) if pts else np.zeros((0, 3), np.int64)
        if len(hard) > limit:
            hard = hard[self.rng.choice(len(hard), limit, replace=False)]
        self.hard = hard.astype(np.int64)
        return len(hard)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        imgs, masks = [], []
        use_hard = bool(len(self.hard)) and self.hard_prob > 0
        # among the other patches, the foreground share that keeps fg_prob overall
        fg_prob = self.fg_prob / (1.0 - self.hard_prob) if use_hard and self.hard_prob < 1 else self.fg_prob
        for _ in range(batch):
            if use_hard and self.rng.random() < self.hard_prob:
                i, cy, cx = self.hard[self.rng.integers(len(self.hard))]
                r = self.regions[i]
            else:
                r = self.regions[self.rng.choice(len(self.regions), p=self.weights)]
                if len(r.fg) and self.rng.random() < fg_prob:
                    cy, cx = r.fg[self.rng.integers(len(r.fg))]
                else:
                    cy, cx = self.rng.integers(r.mask.shape[0]), self.rng.integers(r.mask.shape[1])
            a, m = self._crop(r, cy, cx)
            imgs.append(a)
            masks.append(m)
        return np.stack(imgs), np.stack(masks)


def prepare_regions(pairs, card, val_pairs, val_fraction):
    """Training and validation regions from ``(image, mask, slices)`` triples."""
    train_regions, val_regions = [], []
    for i, (image, mask, slices) in enumerate(pairs):
        check_pair(image, mask, f"pair {i}")
        zs = annotated_slices(mask, slices)
        if not zs:
            raise DataError(
                f"pair {i} has no annotated slice: paint some mitochondria (or pass the slices to use)"
            )
        regions = build_regions(image, mask, zs, card)
        for r in regions:
            r.pair = i
        if val_pairs is None and val_fraction > 0 and len(regions) >= max(2, round(1 / val_fraction)):
            # enough slices: hold out the last ones (a contiguous block, no leak from neighbours)
            nval = max(1, int(round(len(regions) * val_fraction)))
            nval = min(nval, len(regions) - 1)
            val_regions += regions[-nval:]
            regions = regions[:-nval]
        # a few corrected slices: every painted pixel is trained on and nothing is held out (a strip
        # of a corrected slice would hide corrections from training and reward the least-adapted
        # checkpoint); the run keeps its last weights
        train_regions += regions
    if val_pairs is not None:
        for i, (image, mask, slices) in enumerate(val_pairs):
            check_pair(image, mask, f"validation pair {i}")
            zs = annotated_slices(mask, slices)
            if not zs:
                raise DataError(f"validation pair {i} has no annotated slice")
            regions = build_regions(image, mask, zs, card)
            for r in regions:
                r.pair = i
            val_regions += regions
    if sum(float(r.mask.sum()) for r in train_regions) == 0:
        raise DataError("the training masks are empty: there is no foreground to learn from")
    return train_regions, val_regions
