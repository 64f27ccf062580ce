"""The golden set format on its own: exact restoring of compact inputs, raw references of
quantised outputs, sampled positions, every output compared, format 1 still read."""

from __future__ import annotations

import io

import numpy as np
import pytest

from edgefleet.protocol import golden


def test_shrunk_images_restore_exactly_by_pixel_repetition():
    rng = np.random.default_rng(0)
    x = rng.random((3, 32, 48, 3)).astype(np.float32)
    small = golden.shrink(x, 4)
    assert small.shape == (3, 8, 12, 3)
    assert np.allclose(small[0, 0, 0], x[0, :4, :4].mean(axis=(0, 1)), atol=1e-6)
    stored = small.astype(np.float16)
    restored = golden.restore(stored, 4)
    assert restored.shape == x.shape and restored.dtype == np.float32
    # every 4x4 block is the one stored value, exactly
    assert np.array_equal(restored[:, 4:8, 8:12], np.broadcast_to(stored[:, 1:2, 2:3].astype(np.float32),
                                                                    (3, 4, 4, 3)))
    with pytest.raises(golden.GoldenError, match="not divisible"):
        golden.shrink(x, 5)
    ints = np.arange(2 * 4 * 4 * 1, dtype=np.int8).reshape(2, 4, 4, 1)
    assert golden.restore(ints, 1) is ints  # the tensor as it is: never converted


def test_positions_spread_without_lining_up_with_the_last_axis():
    assert golden.sample_positions(100, 10) is None  # small outputs are compared whole
    pos = golden.sample_positions(2016 * 18, 18)
    assert len(pos) == golden.SAMPLED_ELEMENTS and len(set(pos.tolist())) == len(pos)
    assert len(set((pos % 18).tolist())) == 18  # every coordinate of a box gets its turn
    assert pos.max() < 2016 * 18


def _set(outputs: dict[str, np.ndarray], checks: dict[str, golden.OutputCheck]) -> golden.GoldenSet:
    stored = {"image": np.zeros((len(next(iter(outputs.values()))), 8, 8, 1), np.float16)}
    data, section = golden.encode(stored, {"image": 1}, outputs, checks)
    return golden.decode(data, section)


def test_round_trip_compares_every_output_and_names_the_one_that_breaks():
    rng = np.random.default_rng(1)
    scale, zp = 1 / 256, -128
    scores_q = rng.integers(-128, 128, (5, 10)).astype(np.float32)
    scores = (scores_q - zp) * scale  # what a quantised output dequantises to
    boxes = rng.normal(100, 40, (5, 2016, 18)).astype(np.float32)
    checks = {"scores": golden.OutputCheck(2 * scale, class_scores=True, scale=scale, zero_point=zp),
              "boxes": golden.OutputCheck(0.5)}
    g = _set({"scores": scores, "boxes": boxes}, checks)
    assert g.samples == 5 and g.positions["scores"] is None and len(g.positions["boxes"]) == 256
    assert np.allclose(g.references["scores"], scores, atol=1e-7)  # raw integers, exact
    ok = golden.compare(g, {"scores": scores, "boxes": boxes})
    assert all(r.passed for r in ok) and all(r.mean_abs_error < 1e-6 for r in ok)

    broken = boxes.copy()
    broken[..., 0] += 50.0  # one coordinate of every box wrong: the second output breaks
    results = {r.name: r for r in golden.compare(g, {"scores": scores, "boxes": broken})}
    assert results["scores"].passed and not results["boxes"].passed
    assert "output 'boxes': mean abs error" in results["boxes"].reason()

    swapped = scores[:, ::-1].copy()  # the top class moves: the agreement fails
    results = {r.name: r for r in golden.compare(g, {"scores": swapped, "boxes": boxes})}
    assert not results["scores"].passed and "top-1 agreement" in results["scores"].reason()

    missing = {r.name: r for r in golden.compare(g, {"scores": scores})}
    assert not missing["boxes"].passed and "no such output" in missing["boxes"].reason()
    wrong_shape = {r.name: r for r in golden.compare(g, {"scores": scores[:, :5], "boxes": boxes})}
    assert not wrong_shape["scores"].passed and "does not fit" in wrong_shape["scores"].reason()


def test_quantised_references_take_a_quarter_of_the_bytes():
    scale = 0.05
    values = (np.arange(4 * 1000).reshape(4, 1000) % 200 - 100).astype(np.float32) * scale
    check = golden.OutputCheck(2 * scale, class_scores=True, scale=scale, zero_point=0)
    data, _ = golden.encode({"x": np.zeros((4, 2), np.int8)}, {}, {"out": values}, {"out": check})
    with np.load(io.BytesIO(data)) as npz:
        assert npz["reference:out"].dtype == np.int8


def test_format_1_golden_sets_still_read():
    buf = io.BytesIO()
    np.savez(buf, inputs=np.ones((2, 3), np.float32), reference_outputs=np.eye(2, 3, dtype=np.float32))
    g = golden.decode(buf.getvalue(), {"file": "golden.npz", "min_top1_agreement": 1.0,
                                       "max_mean_abs_error": 0.01})
    g = golden.bind_v1(g, "in", "out")
    assert set(g.inputs) == {"in"} and set(g.checks) == {"out"} and g.checks["out"].class_scores
    (result,) = golden.compare(g, {"out": np.eye(2, 3, dtype=np.float32)})
    assert result.passed


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04garbage"])
def test_unreadable_golden_sets_are_golden_errors(data):
    with pytest.raises(golden.GoldenError):
        golden.decode(data, {"format": golden.FORMAT, "inputs": {"x": {}}, "outputs": {}})
