"""Drawing of the synthetic lesions: one 64x64 RGB image per (class, skin type, random stream).

The visual code is layered so that the taxonomy is visible in the pixels:

* class (strongest cue): the dominant lesion colour, chosen far from every skin tone and from the
  other classes, so it stays distinguishable from Fitzpatrick I to VI;
* category: malignant lesions have irregular, notched, asymmetric borders and are large; benign
  ones are single round/oval lesions with smooth borders; non-neoplastic ones are several diffuse
  patches spread over the skin rather than one discrete lesion;
* group: melanocytic lesions carry a pigment network (a reticular mesh), epidermal ones a fine
  keratin speckle, the dermal one a central white scar-like patch;
* leaf extras: melanoma variegation (black and blue-grey blotches), BCC red telangiectasia and
  a pearly highlight, SCC a pale keratin crust, SK dark crypts and white milia-like dots,
  psoriasis silvery scale, vitiligo a thin darker rim.

Nuisances vary freely: position, size, rotation, colour jitter, lighting, skin texture, hairs.
Images are drawn at 2x and box-downsampled, which anti-aliases edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPER = 2  # supersampling factor
S = SIZE * SUPER

# Background skin colour per Fitzpatrick type (light to dark).
SKIN_TONES: dict[int, tuple[int, int, int]] = {
    1: (245, 218, 198),
    2: (232, 196, 165),
    3: (206, 160, 122),
    4: (170, 120, 84),
    5: (124, 83, 57),
    6: (92, 62, 44),
}


@dataclass(frozen=True)
class LesionStyle:
    """The visual signature of one class."""

    colour: tuple[int, int, int]  # dominant lesion colour
    colour_name: str
    layout: str  # "single" (one discrete lesion) or "patches" (several diffuse patches)
    border: str  # "irregular" | "smooth" | "soft"
    radius: tuple[float, float]  # lesion radius range, in output pixels
    texture: str  # "network" | "speckle" | "scar" | "scale" | "rim"
    extras: str  # human description of the leaf-specific marks, for the README


STYLES: dict[str, LesionStyle] = {
    "melanoma": LesionStyle((25, 25, 80), "blue-black", "single", "irregular", (13, 20), "network",
                            "variegated black and blue-grey blotches; broken, distorted network"),
    "basal_cell_carcinoma": LesionStyle((230, 110, 160), "pearly pink-magenta", "single", "irregular", (12, 18), "speckle",
                                        "red branching telangiectasia lines and a white pearly highlight"),
    "squamous_cell_carcinoma": LesionStyle((200, 35, 35), "bright red", "single", "irregular", (12, 18), "speckle",
                                           "pale yellow-white keratin crust in the centre"),
    "melanocytic_nevus": LesionStyle((50, 28, 12), "dark chocolate brown", "single", "smooth", (8, 12), "network",
                                     "uniform colour, regular fine pigment network"),
    "seborrheic_keratosis": LesionStyle((140, 150, 40), "waxy olive-ochre", "single", "smooth", (9, 13), "speckle",
                                        "dark crypt lines (cerebriform) and white milia-like dots"),
    "dermatofibroma": LesionStyle((140, 80, 130), "mauve-violet", "single", "smooth", (6, 9), "scar",
                                  "central white scar-like patch, faint darker peripheral ring"),
    "psoriasis": LesionStyle((235, 120, 90), "salmon-red", "patches", "soft", (5, 11), "scale",
                             "2-5 plaques covered with dense silvery-white scale"),
    "vitiligo": LesionStyle((250, 250, 250), "milky white", "patches", "soft", (9, 18), "rim",
                            "1-3 large depigmented geographic patches with a thin darker rim"),
}


# --------------------------------------------------------------------------- primitives
_YY, _XX = np.mgrid[0:S, 0:S].astype(np.float32) / SUPER  # coordinates in output pixels


def smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random cells x cells grid upsampled bicubically to S x S."""
    grid = rng.random((cells, cells)).astype(np.float32)
    up = Image.fromarray(grid, mode="F").resize((S, S), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(up), 0.0, 1.0)


def blend(image: np.ndarray, colour, alpha: np.ndarray) -> None:
    """In place: image = image * (1 - alpha) + colour * alpha (alpha in [0, 1], H x W)."""
    colour = np.asarray(colour, dtype=np.float32)
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    image *= 1.0 - a
    image += a * colour


def jitter(rng: np.random.Generator, colour, spread: float = 7.0) -> np.ndarray:
    return np.clip(np.asarray(colour, dtype=np.float32) + rng.normal(0.0, spread, 3), 0, 255)


def blob_mask(
    rng: np.random.Generator, cx: float, cy: float, radius: float, border: str, edge: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """Soft mask of a star-shaped blob and the normalised radial distance (0 centre, 1 edge).

    The outline is r(theta) = radius * (1 + sum of cosines); 'irregular' adds notches and an
    asymmetric bulge, 'smooth' is a gently elliptical disc, 'soft' a blurrier organic patch.
    """
    theta = np.arctan2(_YY - cy, _XX - cx)
    dist = np.hypot(_YY - cy, _XX - cx)
    outline = np.ones_like(theta)
    angle = rng.uniform(0, 2 * math.pi)
    if border == "irregular":
        outline += rng.uniform(0.12, 0.22) * np.cos(theta - angle)  # asymmetry
        for k in range(2, 10):
            outline += rng.uniform(0.03, 0.09) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        outline += 0.06 * np.cos(17 * theta + rng.uniform(0, 2 * math.pi))  # fine notching
        edge = 0.6
    elif border == "smooth":
        outline += rng.uniform(0.0, 0.12) * np.cos(2 * (theta - angle))  # mild ellipse
        outline += 0.02 * np.cos(3 * theta + rng.uniform(0, 2 * math.pi))
    else:  # soft: organic, blurry
        for k in range(2, 5):
            outline += rng.uniform(0.05, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        edge = 2.0
    r = radius * outline
    mask = np.clip((r - dist) / edge + 0.5, 0.0, 1.0)
    return mask, dist / np.maximum(r, 1e-3)


def draw_lines(
    rng: np.random.Generator, count: int, cx: float, cy: float, spread: float, steps: int, width: int
) -> np.ndarray:
    """Mask of `count` wandering polylines (hairs, vessels) starting near (cx, cy)."""
    canvas = Image.new("L", (S, S), 0)
    pen = ImageDraw.Draw(canvas)
    for _ in range(count):
        x, y = (cx + rng.uniform(-spread, spread)) * SUPER, (cy + rng.uniform(-spread, spread)) * SUPER
        heading = rng.uniform(0, 2 * math.pi)
        points = [(x, y)]
        for _ in range(steps):
            heading += rng.normal(0, 0.35)
            x += math.cos(heading) * 3 * SUPER
            y += math.sin(heading) * 3 * SUPER
            points.append((x, y))
        pen.line(points, fill=255, width=width * SUPER // 2 or 1)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def dots(rng: np.random.Generator, density: float) -> np.ndarray:
    """Random fine dots (scale, keratin, milia) as a mask in [0, 1]."""
    return (rng.random((S, S)) < density).astype(np.float32)


def network(rng: np.random.Generator, pitch: float, distortion: float) -> np.ndarray:
    """Reticular mesh in [0, 1] (1 on the lines): a warped grid of thin troughs."""
    warp_x = (smooth_noise(rng, 5) - 0.5) * distortion
    warp_y = (smooth_noise(rng, 5) - 0.5) * distortion
    angle = rng.uniform(0, math.pi)
    u = (_XX * math.cos(angle) + _YY * math.sin(angle)) / pitch + warp_x
    v = (-_XX * math.sin(angle) + _YY * math.cos(angle)) / pitch + warp_y
    lines = np.maximum(np.abs(np.cos(math.pi * u)), np.abs(np.cos(math.pi * v)))
    return np.clip((lines - 0.75) / 0.25, 0.0, 1.0)


# --------------------------------------------------------------------------- skin
def skin(rng: np.random.Generator, fitzpatrick: int) -> np.ndarray:
    """Background: the type's tone with jitter, a lighting gradient and mottled texture."""
    # Mostly lightness jitter: independent per-channel jitter turns skin olive or grey.
    tone = np.asarray(SKIN_TONES[fitzpatrick], dtype=np.float32) * (1.0 + rng.normal(0.0, 0.035))
    tone = np.clip(tone + rng.normal(0.0, 2.5, 3), 0, 255)
    angle = rng.uniform(0, 2 * math.pi)
    gradient = ((_XX - SIZE / 2) * math.cos(angle) + (_YY - SIZE / 2) * math.sin(angle)) / SIZE
    shade = 1.0 + rng.uniform(0.04, 0.12) * gradient + 0.05 * (smooth_noise(rng, 6) - 0.5)
    image = tone[None, None, :] * shade[..., None]
    image += rng.normal(0.0, 3.0, (S, S, 1))  # fine, colourless grain
    return image.astype(np.float32)


# --------------------------------------------------------------------------- lesions
def _single(image: np.ndarray, rng: np.random.Generator, leaf: str, style: LesionStyle) -> None:
    cx, cy = SIZE / 2 + rng.uniform(-7, 7), SIZE / 2 + rng.uniform(-7, 7)
    radius = rng.uniform(*style.radius)
    mask, rel = blob_mask(rng, cx, cy, radius, style.border)
    colour = jitter(rng, style.colour)
    # Slight darker/lighter shading across the lesion so it is not a flat sticker.
    body = mask * (0.92 + 0.08 * smooth_noise(rng, 4))
    blend(image, colour, body)

    if style.texture == "network":
        irregular = leaf == "melanoma"
        mesh = network(rng, pitch=rng.uniform(2.2, 3.0), distortion=1.6 if irregular else 0.3)
        if irregular:
            mesh *= smooth_noise(rng, 6) > 0.35  # broken network
        blend(image, colour * 0.45, 0.55 * mesh * mask)
    elif style.texture == "speckle":
        density = 0.10 if leaf == "seborrheic_keratosis" else 0.06
        blend(image, jitter(rng, (245, 240, 225), 5), 0.55 * dots(rng, density) * mask)
    elif style.texture == "scar":
        centre, _ = blob_mask(rng, cx + rng.uniform(-1, 1), cy + rng.uniform(-1, 1), radius * 0.38, "smooth")
        blend(image, jitter(rng, (235, 228, 235), 4), 0.9 * centre)
        ring = np.clip(1.0 - np.abs(rel - 0.95) / 0.12, 0.0, 1.0)
        blend(image, colour * 0.6, 0.5 * ring)

    if leaf == "melanoma":
        # Black and blue-grey variegation, small enough that blue-black stays the dominant colour.
        for shade, threshold in (((12, 12, 16), 0.62), ((105, 115, 165), 0.7)):
            blotches = (smooth_noise(rng, 5) > threshold).astype(np.float32)
            blend(image, jitter(rng, shade, 5), 0.85 * blotches * mask)
    elif leaf == "basal_cell_carcinoma":
        vessels = draw_lines(rng, 3, cx, cy, radius * 0.5, steps=5, width=2)
        blend(image, jitter(rng, (175, 15, 35), 5), 0.9 * vessels * mask)
        glint, _ = blob_mask(rng, cx - radius * 0.3, cy - radius * 0.3, radius * 0.22, "smooth", edge=1.5)
        blend(image, (255, 255, 255), 0.75 * glint)
    elif leaf == "squamous_cell_carcinoma":
        crust, _ = blob_mask(rng, cx + rng.uniform(-2, 2), cy + rng.uniform(-2, 2), radius * 0.5, "irregular")
        blend(image, jitter(rng, (238, 228, 180), 6), 0.85 * crust)
    elif leaf == "seborrheic_keratosis":
        crypts = np.clip(1.0 - np.abs(smooth_noise(rng, 9) - 0.5) / 0.06, 0.0, 1.0)
        blend(image, colour * 0.35, 0.7 * crypts * mask)


def _patches(image: np.ndarray, rng: np.random.Generator, leaf: str, style: LesionStyle) -> None:
    count = int(rng.integers(2, 6)) if leaf == "psoriasis" else int(rng.integers(1, 4))
    colour = jitter(rng, style.colour)
    total = np.zeros((S, S), dtype=np.float32)
    for _ in range(count):
        cx, cy = rng.uniform(6, SIZE - 6), rng.uniform(6, SIZE - 6)
        mask, _ = blob_mask(rng, cx, cy, rng.uniform(*style.radius), style.border)
        total = np.maximum(total, mask)
    if leaf == "vitiligo":
        # A thin hyperpigmented rim keeps white patches visible even on the lightest skin.
        rim = np.clip(total * (1.0 - total) * 4.0, 0.0, 1.0)
        blend(image, image.mean(axis=(0, 1)) * 0.6, 0.6 * rim)
        blend(image, colour, np.clip(total * 1.3 - 0.3, 0.0, 1.0))
    else:
        blend(image, colour, total)
        scale = dots(rng, 0.22) * (smooth_noise(rng, 7) > 0.3)
        blend(image, jitter(rng, (225, 228, 238), 4), 0.8 * scale * total)


def render(leaf: str, fitzpatrick: int, rng: np.random.Generator) -> np.ndarray:
    """One SIZE x SIZE x 3 uint8 image of class `leaf` on skin of type `fitzpatrick`."""
    style = STYLES[leaf]
    image = skin(rng, fitzpatrick)
    if style.layout == "single":
        _single(image, rng, leaf, style)
    else:
        _patches(image, rng, leaf, style)
    if rng.random() < 0.25:  # hairs: a nuisance shared by all classes
        hairs = draw_lines(rng, int(rng.integers(1, 4)), SIZE / 2, SIZE / 2, SIZE / 2, steps=14, width=1)
        blend(image, (35, 25, 20), 0.8 * hairs)
    image = np.clip(image, 0, 255).astype(np.uint8)
    small = Image.fromarray(image, mode="RGB").resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(small)
