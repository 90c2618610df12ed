"""The pure-PyTorch ops against independent references (plain-Python loops, hand-computed values)."""

import importlib
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visionllm.compat import mmcv_has_compiled_ops
from visionllm.ops import batched_nms, multi_scale_deformable_attention, nms, roi_align
from visionllm.ops.roi_align import roi_align_pytorch

lite_only = pytest.mark.skipif(mmcv_has_compiled_ops(), reason="tests the mmcv-lite fallbacks")


# ---------------------------------------------------------------- nms


def reference_nms(boxes: list[list[float]], scores: list[float], iou_threshold: float) -> list[int]:
    """Textbook greedy NMS: visit boxes by descending score, keep one unless it overlaps a kept box."""

    def iou(a, b):
        inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = inter_w * inter_h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[j]) <= iou_threshold for j in kept):
            kept.append(i)
    return kept


def random_boxes(generator: torch.Generator, n: int, extent: float = 100.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * extent
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * extent / 4 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


box_lists = st.lists(
    st.tuples(*[st.integers(0, 40)] * 2, *[st.integers(1, 25)] * 2, st.integers(0, 9)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=box_lists, iou_threshold=st.sampled_from([0.0, 0.3, 0.5, 0.7]))
def test_nms_matches_greedy_reference(rows, iou_threshold):
    """Integer boxes and scores: exact IoU ties and score ties are common, the tricky cases."""
    boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in rows]
    scores = [float(s) for *_, s in rows]
    kept = nms(
        torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64), iou_threshold
    )
    expected = reference_nms(boxes, scores, iou_threshold)
    assert kept.dtype == torch.long
    if mmcv_has_compiled_ops():  # mmcv's kernel breaks score ties in its own order
        assert sorted(kept.tolist()) == sorted(expected)
    else:
        assert kept.tolist() == expected


def test_nms_random_float_boxes():
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(generator, 300)
    scores = torch.rand(300, generator=generator, dtype=torch.float64)
    expected = reference_nms(boxes.tolist(), scores.tolist(), 0.5)
    assert nms(boxes, scores, 0.5).tolist() == expected
    assert nms(boxes.float(), scores.float(), 0.5).tolist() == expected  # float32 input too


def test_nms_2000_boxes_fast_and_greedy():
    """Fast enough for detection post-processing; the result is checked against the two conditions that
    define greedy NMS (kept boxes don't overlap; each dropped box overlaps a higher-scored kept one)."""
    generator = torch.Generator().manual_seed(2)
    boxes = random_boxes(generator, 2000, extent=1000.0)
    scores = torch.rand(2000, generator=generator, dtype=torch.float64)
    start = time.perf_counter()
    kept = nms(boxes, scores, 0.5)
    assert time.perf_counter() - start < 3.0, "a vectorised NMS takes well under a second here"

    b, s, kept = boxes.numpy(), scores.numpy(), kept.numpy()
    inter_w = (np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])).clip(0)
    inter_h = (np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])).clip(0)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter_w * inter_h / (area[:, None] + area[None, :] - inter_w * inter_h)
    assert np.all(np.diff(s[kept]) <= 0)
    among_kept = iou[np.ix_(kept, kept)]
    np.fill_diagonal(among_kept, 0)
    assert np.all(among_kept <= 0.5)
    dropped = np.setdiff1d(np.arange(2000), kept)
    suppressed_by = (iou[np.ix_(dropped, kept)] > 0.5) & (s[kept][None, :] > s[dropped][:, None])
    assert suppressed_by.any(axis=1).all() and 0 < len(dropped) < 2000


def test_nms_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)


def test_batched_nms_is_nms_per_group():
    generator = torch.Generator().manual_seed(1)
    boxes = random_boxes(generator, 200, extent=50.0) - 25.0  # negative coordinates as well
    scores = torch.rand(200, generator=generator, dtype=torch.float64)
    groups = torch.randint(0, 4, (200,), generator=generator)
    kept = batched_nms(boxes, scores, groups, 0.4)
    expected = []
    for group in range(4):
        members = torch.nonzero(groups == group).squeeze(1)
        expected += members[nms(boxes[members], scores[members], 0.4)].tolist()
    assert sorted(kept.tolist()) == sorted(expected)
    assert torch.all(scores[kept][:-1] >= scores[kept][1:]), "kept indices come by descending score"
    # identical boxes in different groups must not suppress each other
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2)
    assert batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist() == [0, 1]


@lite_only
def test_nms_dispatches_to_mmcv_when_compiled(monkeypatch):
    """With compiled ops reported, the call goes to mmcv (here the mmcv-lite stand-in, which raises)."""
    monkeypatch.setattr(importlib.import_module("visionllm.ops.nms"), "mmcv_has_compiled_ops", lambda: True)
    with pytest.raises(RuntimeError, match="needs the compiled mmcv"):
        nms(torch.rand(3, 4), torch.rand(3), 0.5)


# ---------------------------------------------------------------- roi_align


def ramp_features(height: int = 16, width: int = 20) -> torch.Tensor:
    """Two channels, f0 = 2x + 3y + 1 and f1 = -x + 0.5y: bilinear samples of a linear ramp are exact."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    return torch.stack([2 * xs + 3 * ys + 1, -xs + 0.5 * ys])[None]


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5])
def test_roi_align_on_ramp_equals_ramp_at_bin_centres(aligned, sampling_ratio, spatial_scale):
    """Each bin's average of a linear ramp is the ramp at the bin centre, computed here by hand."""
    features = torch.cat([ramp_features(), 10 + ramp_features()])  # two images
    boxes = [  # every sample lands inside the 16x20 map (no clamping) at either scale
        (0, 2.0, 3.0, 9.0, 8.5),
        (1, 1.5, 1.5, 17.0, 13.0),  # large: several samples per bin when adaptive
        (0, 4.0, 4.0, 4.6, 5.0),  # smaller than a bin
        (1, 3.0, 2.0, 11.0, 3.0),
    ]
    rois = torch.tensor(boxes, dtype=torch.float64)
    out_h, out_w = 3, 4
    pooled = roi_align(features, rois, (out_h, out_w), spatial_scale, sampling_ratio, aligned)
    assert pooled.shape == (4, 2, out_h, out_w)
    offset = 0.5 if aligned else 0.0
    for k, (image, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in (x1, y1, x2, y2))
        width, height = x2 - x1, y2 - y1
        if not aligned:
            width, height = max(width, 1.0), max(height, 1.0)
        for ph in range(out_h):
            for pw in range(out_w):
                cx, cy = x1 + (pw + 0.5) * width / out_w, y1 + (ph + 0.5) * height / out_h
                expected = [2 * cx + 3 * cy + 1 + 10 * image, -cx + 0.5 * cy + 10 * image]
                torch.testing.assert_close(pooled[k, :, ph, pw], torch.tensor(expected, dtype=torch.float64))


def reference_roi_align(features, roi, scale, out_h, out_w, sampling_ratio, aligned):
    """Plain-Python RoIAlign, one sample at a time, following the semantics of mmcv's CPU kernel."""
    _, channels, height, width = features.shape
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (v * scale - offset for v in roi[1:])
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    grid_h = sampling_ratio or max(math.ceil(roi_h / out_h), 0)
    grid_w = sampling_ratio or max(math.ceil(roi_w / out_w), 0)
    image = features[int(roi[0])]

    def bilinear(y, x):
        if y < -1 or y > height or x < -1 or x > width:
            return torch.zeros(channels, dtype=features.dtype)
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = min(int(y), height - 1), min(int(x), width - 1)
        y1_, x1_ = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
        ly = 0.0 if y0 == height - 1 else y - y0
        lx = 0.0 if x0 == width - 1 else x - x0
        return (
            (1 - ly) * (1 - lx) * image[:, y0, x0]
            + (1 - ly) * lx * image[:, y0, x1_]
            + ly * (1 - lx) * image[:, y1_, x0]
            + ly * lx * image[:, y1_, x1_]
        )

    out = torch.zeros(channels, out_h, out_w, dtype=features.dtype)
    for ph in range(out_h):
        for pw in range(out_w):
            for iy in range(grid_h):
                for ix in range(grid_w):
                    y = y1 + ph * roi_h / out_h + (iy + 0.5) * roi_h / out_h / grid_h
                    x = x1 + pw * roi_w / out_w + (ix + 0.5) * roi_w / out_w / grid_w
                    out[:, ph, pw] += bilinear(y, x)
            out[:, ph, pw] /= max(grid_h * grid_w, 1)
    return out


def random_rois(generator, n, num_images, low, high, max_size):
    xy = low + torch.rand(n, 2, generator=generator, dtype=torch.float64) * (high - low)
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * max_size
    batch = torch.randint(0, num_images, (n, 1), generator=generator).double()
    return torch.cat([batch, xy, xy + wh], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_matches_per_sample_loop_at_borders(aligned, sampling_ratio, monkeypatch):
    """RoIs partly or wholly off the map, and degenerate ones: zero beyond [-1, size], clamping inside."""
    monkeypatch.setattr(importlib.import_module("visionllm.ops.roi_align"), "_MAX_GATHERED_VALUES", 100)
    generator = torch.Generator().manual_seed(sampling_ratio + 2 * aligned)
    features = torch.randn(2, 2, 6, 7, generator=generator, dtype=torch.float64)
    rois = random_rois(generator, 12, 2, low=-8.0, high=16.0, max_size=10.0)
    rois[0, 3:] = rois[0, 1:3]  # zero-size RoI
    pooled = roi_align(features, rois, (3, 2), 0.5, sampling_ratio, aligned)
    for k, roi in enumerate(rois.tolist()):
        expected = reference_roi_align(features, roi, 0.5, 3, 2, sampling_ratio, aligned)
        torch.testing.assert_close(pooled[k], expected)


def test_roi_align_edge_cases_by_hand():
    row = torch.tensor([[[[0.0, 1.0, 2.0, 3.0]]]], dtype=torch.float64)  # 1x1x1x4
    one_sample = dict(output_size=1, spatial_scale=1.0, sampling_ratio=1, aligned=False)
    # sample at x = 3.5, in the last pixel's band: clamped to pixel 3, not extrapolated to 3.5
    assert roi_align(row, torch.tensor([[0, 3.0, 0.0, 4.0, 1.0]]).double(), **one_sample).item() == 3.0
    # sample at x = 4.7 > width: contributes zero
    assert roi_align(row, torch.tensor([[0, 4.2, 0.0, 5.2, 1.0]]).double(), **one_sample).item() == 0.0
    # 2x2 samples at x, y in {-1.5, -0.5} on a map of ones: only (-0.5, -0.5) is inside [-1, size]
    ones = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    far = roi_align(ones, torch.tensor([[0, -2.0, -2.0, 0.0, 0.0]]).double(), 1, 1.0, 2, False)
    assert far.item() == 0.25
    empty = roi_align(ones, torch.tensor([[0, 2.0, 2.0, 2.0, 2.0]]).double(), 2, 1.0, 0, True)
    assert torch.count_nonzero(empty) == 0


def test_roi_align_matches_torchvision_python_reference():
    """torchvision ships its own pure-PyTorch RoIAlign (for torch.compile): an independent reference.

    It differs from the compiled kernels at the map's border, so the RoIs here stay inside the map.
    """
    tv_module = pytest.importorskip("torchvision.ops.roi_align")
    if not hasattr(tv_module, "_roi_align"):
        pytest.skip("this torchvision has no pure-PyTorch RoIAlign")
    tv_roi_align = getattr(tv_module._roi_align, "__wrapped__", tv_module._roi_align)  # skip torch.compile
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 12, 15, generator=generator, dtype=torch.float64)
    rois = random_rois(generator, 30, 2, low=2.0, high=10.0, max_size=14.0)  # inside 12x15 at scale 0.5
    for aligned in (True, False):
        for sampling_ratio in (0, 3):
            expected = tv_roi_align(features, rois, 0.5, 5, 4, sampling_ratio, aligned)
            torch.testing.assert_close(
                roi_align(features, rois, (5, 4), 0.5, sampling_ratio, aligned), expected
            )


def test_roi_align_gradcheck():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 1, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 0.7, 4.2, 3.9], [1, -0.8, 1.1, 6.5, 4.4], [1, 2.0, 2.0, 2.6, 2.4]], dtype=torch.float64
    )
    assert torch.autograd.gradcheck(lambda f: roi_align_pytorch(f, rois, 2, 1.0, 0, True), (features,))


@lite_only
def test_roi_align_dispatches_to_mmcv_when_compiled(monkeypatch):
    monkeypatch.setattr(
        importlib.import_module("visionllm.ops.roi_align"), "mmcv_has_compiled_ops", lambda: True
    )
    with pytest.raises(RuntimeError, match="needs the compiled mmcv"):
        roi_align(torch.rand(1, 1, 4, 4), torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]]), 2)


# ---------------------------------------------------------------- multi-scale deformable attention


def reference_deformable_attention(value, spatial_shapes, sampling_locations, attention_weights):
    """Per-point loop: bilinear sample at (x * w - 0.5, y * h - 0.5) with zeros outside, weighted sum."""
    bs, _, num_heads, head_dims = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    starts = [0]
    for h, w in spatial_shapes.tolist()[:-1]:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(bs, num_queries, num_heads, head_dims, dtype=value.dtype)
    for b in range(bs):
        for q in range(num_queries):
            for m in range(num_heads):
                for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
                    for p in range(num_points):
                        x = sampling_locations[b, q, m, lvl, p, 0].item() * w - 0.5
                        y = sampling_locations[b, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(head_dims, dtype=value.dtype)
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < h and 0 <= xx < w:
                                weight = (1 - abs(x - xx)) * (1 - abs(y - yy))
                                sample += weight * value[b, starts[lvl] + yy * w + xx, m]
                        out[b, q, m] += attention_weights[b, q, m, lvl, p] * sample
    return out.flatten(2)


def test_deformable_attention_matches_per_point_loop():
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor([[4, 5], [2, 3]])
    level_start_index = torch.tensor([0, 20])
    bs, num_queries, num_heads, head_dims, num_points = 2, 3, 2, 4, 3
    value = torch.randn(bs, 26, num_heads, head_dims, generator=generator, dtype=torch.float64)
    # locations slightly beyond [0, 1] exercise the zero padding
    locations = (
        torch.rand(bs, num_queries, num_heads, 2, num_points, 2, generator=generator, dtype=torch.float64)
        * 1.2
        - 0.1
    )
    weights = torch.rand(bs, num_queries, num_heads, 2, num_points, generator=generator, dtype=torch.float64)
    out = multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights)
    assert out.shape == (bs, num_queries, num_heads * head_dims)
    torch.testing.assert_close(out, reference_deformable_attention(value, spatial_shapes, locations, weights))


def test_mmdet_deformable_detr_encoder_trains_on_cpu():
    """mmdet's encoder runs mmcv's MultiScaleDeformableAttention, which must work under mmcv-lite."""
    from mmdet.models.layers.transformer import DeformableDetrTransformerEncoder

    torch.manual_seed(0)
    embed_dims, spatial_shapes = 32, torch.tensor([[6, 8], [3, 4]])
    encoder = DeformableDetrTransformerEncoder(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=embed_dims, num_heads=4, num_levels=2, num_points=2, batch_first=True
            ),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=64),
        ),
    )
    num_keys = int(spatial_shapes.prod(1).sum())
    query = torch.randn(2, num_keys, embed_dims, requires_grad=True)
    memory = encoder(
        query=query,
        query_pos=torch.randn(2, num_keys, embed_dims),
        key_padding_mask=torch.zeros(2, num_keys, dtype=torch.bool),
        spatial_shapes=spatial_shapes,
        level_start_index=torch.tensor([0, 48]),
        valid_ratios=torch.ones(2, 2, 2),
    )
    assert memory.shape == (2, num_keys, embed_dims)
    memory.square().mean().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0
    sampling_offsets = encoder.layers[0].self_attn.sampling_offsets.weight
    assert sampling_offsets.grad is not None and sampling_offsets.grad.abs().sum() > 0
