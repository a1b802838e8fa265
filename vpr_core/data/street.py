"""The synthetic street every generated dataset is cut from: a long facade strip (buildings,
windows, doors, trees) drawn once per split, views of it at places along the street, and the
light, viewpoint and noise that make a query differ from a database image."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RENDER_SCALE = 3  # views are cut from a world drawn this many times finer, then downsampled


class Street:
    """A split's street: a facade strip drawn finer than the views cut from it, with places
    every `config.spacing` metres along a random heading (`config`: a validated SynthConfig)."""

    def __init__(self, rng: np.random.Generator, config):
        self.rng = rng
        height, width = config.image_size
        self.view_h, self.view_w = height * RENDER_SCALE, width * RENDER_SCALE
        self.step_px = self.view_w / 2.5  # a neighbour's view overlaps 60% of this one
        self.px_per_m = self.step_px / config.spacing
        world_w = int(self.step_px * (config.places + 4) + self.view_w * 2)
        self.world = draw_world(rng, world_w, int(self.view_h * 1.4))
        heading = rng.uniform(0, 2 * math.pi)
        self.direction = np.array([math.cos(heading), math.sin(heading)])
        self.origin = np.array([584000.0, 4477000.0]) + rng.uniform(-2000, 2000, size=2)

    def view(self, along_m: float, zoom: float, shift_y: float, angle: float) -> Image.Image:
        centre_x = self.view_w + along_m * self.px_per_m
        centre_y = self.world.height / 2 + shift_y * self.view_h
        half_w, half_h = self.view_w / (2 * zoom), self.view_h / (2 * zoom)
        box = (centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h)
        crop = self.world.crop(tuple(int(round(v)) for v in box))
        if angle:
            crop = crop.rotate(angle, resample=Image.BILINEAR, fillcolor=(128, 128, 128))
        return crop

    def utm(self, along: np.ndarray) -> np.ndarray:
        # centimetres, as the @UTM@ file names write them: both layouts hold the same numbers
        return np.round(self.origin + along[:, None] * self.direction, 2)  # [N, 2]


def draw_world(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A street facade: sky, buildings of varied colour with window grids, doors, trees, road."""
    world = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(world)
    sky = rng.integers(150, 230, size=3)
    for y in range(height):
        shade = tuple(int(c * (0.75 + 0.25 * y / height)) for c in sky)
        draw.line([(0, y), (width, y)], fill=shade)
    ground = int(height * 0.82)
    x = 0
    while x < width:
        building_w = int(rng.integers(height // 3, height))
        top = int(rng.integers(int(height * 0.08), int(height * 0.45)))
        colour = tuple(int(v) for v in rng.integers(30, 225, size=3))
        draw.rectangle([x, top, x + building_w, ground], fill=colour, outline=(20, 20, 20))
        _draw_windows(draw, rng, x, top, building_w, ground, colour)
        if rng.random() < 0.6:
            door_w = building_w // 6
            door_x = x + int(rng.integers(0, max(1, building_w - door_w)))
            draw.rectangle([door_x, ground - height // 6, door_x + door_w, ground],
                           fill=tuple(int(v) for v in rng.integers(0, 90, size=3)))
        x += building_w + int(rng.integers(0, height // 8))
    for _ in range(width // (height // 2)):
        if rng.random() < 0.5:
            _draw_tree(draw, rng, int(rng.integers(0, width)), ground, height)
    draw.rectangle([0, ground, width, height], fill=(70, 70, 75))
    for x in range(0, width, height // 3):
        draw.rectangle([x, int(height * 0.9), x + height // 8, int(height * 0.92)],
                       fill=(230, 230, 230))
    return world


def _draw_windows(draw, rng, x, top, width, ground, colour) -> None:
    rows, cols = int(rng.integers(2, 6)), int(rng.integers(2, 5))
    cell_w, cell_h = width / cols, (ground - top) * 0.8 / rows
    pane = tuple(int(255 - v) // 2 + int(rng.integers(0, 80)) for v in colour)
    shape = int(rng.integers(0, 3))  # square, tall or round windows per building
    for r in range(rows):
        for c in range(cols):
            x0, y0 = x + c * cell_w + cell_w * 0.25, top + r * cell_h + cell_h * 0.3
            x1 = x0 + cell_w * (0.5 if shape != 1 else 0.3)
            y1 = y0 + cell_h * (0.45 if shape != 1 else 0.6)
            if shape == 2:
                draw.ellipse([x0, y0, x1, y1], fill=pane)
            else:
                draw.rectangle([x0, y0, x1, y1], fill=pane)


def _draw_tree(draw, rng, x, ground, height) -> None:
    trunk_h = int(height * rng.uniform(0.15, 0.3))
    draw.rectangle([x, ground - trunk_h, x + height // 30 + 1, ground], fill=(80, 55, 30))
    radius = int(height * rng.uniform(0.07, 0.14))
    green = (int(rng.integers(20, 70)), int(rng.integers(90, 170)), int(rng.integers(20, 70)))
    draw.ellipse([x - radius, ground - trunk_h - radius, x + radius, ground - trunk_h + radius],
                 fill=green)


def daylight(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    array = np.asarray(image, dtype=np.float32) * rng.uniform(0.95, 1.05)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


def query_conditions(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another time of day and camera: colour cast, contrast, gamma, haze, occluders."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    gains = rng.uniform(0.55, 1.45, size=3)
    array = array * gains * rng.uniform(0.6, 1.3)
    mean = array.mean()
    array = mean + (array - mean) * rng.uniform(0.6, 1.3)
    array = np.clip(array, 0, 1) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.3:  # haze
        array = array * 0.6 + 0.4 * rng.uniform(0.5, 0.9)
    result = Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(result)
    h, w = result.height, result.width
    for _ in range(int(rng.integers(1, 4))):  # cars, people, signs in front of the facade
        ow, oh = int(w * rng.uniform(0.1, 0.3)), int(h * rng.uniform(0.1, 0.35))
        ox, oy = int(rng.integers(0, w - ow)), int(rng.integers(h // 3, h - oh))
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse([ox, oy, ox + ow, oy + oh], fill=colour)
        else:
            draw.rectangle([ox, oy, ox + ow, oy + oh], fill=colour)
    if rng.random() < 0.5:
        result = result.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.5, 2.0)))
    return result


def noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    array = np.asarray(image, dtype=np.float32)
    array = array + rng.normal(0, rng.uniform(2, 10), size=array.shape)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))
