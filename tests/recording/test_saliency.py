"""Occlusion saliency on a generated model whose output depends on one image region only."""

from __future__ import annotations

import numpy as np
import pytest

from car_runtime.model.metadata import load_metadata
from car_runtime.saliency import OcclusionSaliency, patch_positions

REGION = (20, 60, 90, 150)  # y0, y1, x0, x1 in model-input pixels


@pytest.mark.parametrize("batch", [55, 1])
def test_heat_map_peaks_in_the_only_region_the_model_reads(tiny_model, batch):
    model = tiny_model(region=REGION, seed=7)
    sal = OcclusionSaliency(model.model_file, load_metadata(model.dir / "model_metadata.json"),
                            batch=batch, precision="f32")
    assert sal.batch == batch
    x = model.net.sample_input(seed=3)[0].astype(np.float32)  # [120,160,1]
    heat = sal.heat(x)
    assert heat.shape == (120, 160) and heat.max() > 0
    y0, y1, x0, x1 = REGION
    py, px = np.unravel_index(np.argmax(heat), heat.shape)
    assert y0 <= py < y1 and x0 <= px < x1, (py, px)
    # patches that do not touch the region change nothing
    inside = np.zeros_like(heat, bool)
    inside[max(0, y0 - sal.patch):y1 + sal.patch, max(0, x0 - sal.patch):x1 + sal.patch] = True
    assert float(heat[~inside].max()) <= 1e-6 * float(heat.max()) + 1e-9
    print(sal.cost_line())


def test_batched_and_one_by_one_agree(tiny_model):
    model = tiny_model(region=REGION, seed=7)
    meta = load_metadata(model.dir / "model_metadata.json")
    x = model.net.sample_input(seed=5)[0].astype(np.float32)
    a = OcclusionSaliency(model.model_file, meta, batch=55).heat(x)
    b = OcclusionSaliency(model.model_file, meta, batch=1).heat(x)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_positions_cover_the_whole_input():
    pos = patch_positions(120, 160, 20, 10)
    assert len(pos) == 11 * 15
    covered = np.zeros((120, 160), bool)
    for y, x in pos:
        covered[y:y + 20, x:x + 20] = True
    assert covered.all()
    assert patch_positions(120, 160, 16, 12)[-1] == (104, 144)  # last flush with the edges
