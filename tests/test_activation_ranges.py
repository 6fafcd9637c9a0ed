"""binwise.export.activation_ranges: the int8 activation range of least Lp quantization error."""

import json

import numpy as np
import onnx
from inference_models import tiny_model, tiny_onnx_int8
from onnx import numpy_helper

from binwise.export import export_onnx
from binwise.export.activation_ranges import HISTOGRAM_BINS, LP_NORM, best_range, bin_counts, lp_ranges


def histogram(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    low, high = min(values.min(), 0.0), max(values.max(), 0.0)
    return bin_counts(values, low, high), low, high


def test_bin_counts_are_numpys_histogram():
    values = np.random.default_rng(0).normal(size=100_000).astype(np.float32)
    counts = bin_counts(values, float(values.min()), float(values.max()))
    assert counts.sum() == values.size
    expected = np.histogram(values, HISTOGRAM_BINS, (values.min(), values.max()))[0]
    assert np.abs(counts - expected).sum() <= 0.001 * values.size  # values on a bin edge may go either way


def lp_error(values: np.ndarray, lo: float, hi: float) -> float:
    """The Lp error of quantizing ``values`` to 256 levels over [lo, hi] and back."""
    step = (hi - lo) / 255
    zero_point = np.round(-lo / step)
    quantized = np.clip(np.round(values / step) + zero_point, 0, 255)
    return float(np.sum(np.abs((quantized - zero_point) * step - values) ** LP_NORM))


def test_the_chosen_range_has_the_least_error_on_the_values_themselves():
    """The histogram's estimate finds the range that is best on the raw values too: rarer tail
    values are clipped when that rounds the rest more finely by more than it costs."""
    values = np.random.default_rng(0).laplace(0, 1, 100_000)
    low, high = values.min(), values.max()
    lo, hi = best_range(*histogram(values))
    assert low < lo < 0 < hi < high  # both tails clipped
    assert lp_error(values, lo, hi) < 0.95 * lp_error(values, low, high)
    scaled = min(lp_error(values, f * low, f * high) for f in np.linspace(0.3, 1, 71))
    assert lp_error(values, lo, hi) <= 1.01 * scaled


def test_values_spread_evenly_keep_their_whole_range():
    values = np.random.default_rng(0).uniform(0, 6, 100_000)  # a ReLU6 output using all of [0, 6]
    lo, hi = best_range(*histogram(values))
    assert lo == 0.0
    assert hi > 0.95 * values.max()


def test_lp_ranges_reads_each_feed_twice_and_holds_zero():
    seen = []

    def tensor_values(feed):
        seen.append(feed)
        return {"positive": feed + 1.0, "constant": np.zeros(3)}

    feeds = [np.linspace(0, 1, 50) * k for k in range(1, 4)]
    ranges = lp_ranges(tensor_values, feeds)
    assert len(seen) == 2 * len(feeds)
    assert ranges["constant"] == (0.0, 0.0)
    lo, hi = ranges["positive"]
    assert lo == 0.0 and 2.5 < hi <= 4.0  # the range holds 0 even where the values do not reach it


def activation_scales(path) -> dict[str, float]:
    """The scale of every activation QuantizeLinear of a QDQ model, by the tensor it quantizes."""
    graph = onnx.load(str(path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return {n.input[0]: float(constants[n.input[1]]) for n in graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in constants}


def test_int8_export_narrows_ranges_by_default(tmp_path):
    minmax = export_onnx(tiny_model(), tmp_path / "minmax.onnx", int8=True, calibration_count=26,
                         calibration="minmax")
    lp = tiny_onnx_int8("qdq")  # the default calibration
    for path, calibration in ((lp, "lp"), (minmax, "minmax")):
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["binwise"])["export"]["calibration"] == calibration
    wide, narrow = activation_scales(minmax), activation_scales(lp)
    assert wide.keys() == narrow.keys()
    assert all(narrow[name] <= wide[name] * (1 + 1e-6) for name in wide)  # never wider than min/max
    assert sum(narrow[name] < 0.95 * wide[name] for name in wide) >= len(wide) // 4
