"""The official dSprites traversal GIF as calibration data for the procedural renderer.

``dsprites.gif`` (deepmind/dsprites-dataset, Apache-2.0) holds 320 real 64 x 64 frames of latent
traversals. ``FRAME_FACTORS`` gives each frame's factor vector (shape, scale, orientation,
pos_x, pos_y), read off the frames (reference/dlib_facts.md: frame map of the GIF).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SQUARE, ELLIPSE, HEART = 0, 1, 2


def _frame_factors() -> np.ndarray:
    frames: list[tuple[int, int, int, int, int]] = []

    def scales(shape: int, order: range) -> None:
        frames.extend((shape, s, 0, 0, 0) for s in order)

    up, down = range(6), range(5, -1, -1)
    scales(HEART, up)  # 0-5
    scales(HEART, down)  # 6-11
    scales(HEART, up)  # 12-17
    frames.extend((HEART, 5, o, 0, 0) for o in range(40))  # 18-57
    frames.extend((HEART, 5, 0, 0, y) for y in range(32))  # 58-89: pos_y 0 -> 31
    frames.extend((HEART, 5, 0, x, 31) for x in range(32))  # 90-121: pos_x 0 -> 31
    frames.extend((HEART, 5, 0, 31, y) for y in range(31, -1, -1))  # 122-153
    frames.extend((HEART, 5, 0, x, 0) for x in range(31, -1, -1))  # 154-185
    scales(HEART, down)  # 186-191
    scales(ELLIPSE, up)  # 192-197
    scales(ELLIPSE, down)  # 198-203
    scales(ELLIPSE, up)  # 204-209
    frames.extend((ELLIPSE, 5, o, 0, 0) for o in range(40))  # 210-249
    scales(ELLIPSE, down)  # 250-255
    scales(SQUARE, up)  # 256-261
    scales(SQUARE, down)  # 262-267
    scales(SQUARE, up)  # 268-273
    frames.extend((SQUARE, 5, o, 0, 0) for o in range(40))  # 274-313
    scales(SQUARE, down)  # 314-319
    return np.array(frames, dtype=np.int64)


FRAME_FACTORS = _frame_factors()


def load_reference_frames(path: str | Path) -> np.ndarray:
    """bool (320, 64, 64): the GIF's frames, pixel on where white."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        frames = [np.array(f.convert("L")) > 127 for f in ImageSequence.Iterator(im)]
    out = np.stack(frames)
    if out.shape != (len(FRAME_FACTORS), 64, 64):
        raise ValueError(f"{path}: expected {len(FRAME_FACTORS)} frames of 64x64, got {out.shape}")
    return out


def frame_mismatch(rendered: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mismatched pixels per frame (XOR count) between bool stacks of equal shape."""
    return np.count_nonzero(rendered != reference, axis=(1, 2))
