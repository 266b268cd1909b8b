"""Quantization: error bounds, the Avro Tensor mapping, constant/empty arrays, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.errors import InvalidSummaryError, ModelError
from models.quantize import DTYPES, QuantizedArray, dequantize, quantize

pytestmark = pytest.mark.filterwarnings("error")

shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=40)


@given(hnp.arrays(np.float64, shapes, elements=st.floats(-1e300, 1e300)))
def test_int8_error_is_at_most_half_a_step(values: np.ndarray) -> None:
    q = quantize(values, "int8")
    assert q.data.dtype == np.int8 and np.all(np.abs(q.data.astype(int)) <= 127)
    error = np.abs(dequantize(q) - values)
    assert np.all(error <= q.scale / 2 * (1 + 1e-9) + 1e-15 * np.abs(values) + 1e-300)


@given(hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-6e4, 6e4)))
def test_float16_keeps_about_three_significant_digits(values: np.ndarray) -> None:
    restored = dequantize(quantize(values, "float16"))
    # 2^-11 relative in the normal range; absolute 2^-25 among the subnormals
    assert np.all(np.abs(restored - values) <= np.maximum(np.abs(values) * 2**-11, 2**-25))


@given(
    st.sampled_from(sorted(DTYPES)),
    hnp.arrays(np.float64, shapes, elements=st.floats(-6e4, 6e4)),
)
def test_the_avro_fields_round_trip_exactly(dtype: str, values: np.ndarray) -> None:
    q = quantize(values, dtype)
    data = q.to_bytes()
    assert isinstance(data, bytes) and len(data) == values.size * np.dtype(DTYPES[dtype]).itemsize
    again = QuantizedArray.from_bytes(dtype, list(q.shape), data, q.scale, q.zero)
    assert again.shape == values.shape
    np.testing.assert_array_equal(dequantize(again), dequantize(q))
    assert dequantize(again).dtype == np.float64


def test_bytes_are_little_endian_whatever_the_input_order() -> None:
    big = np.array([1.0, 2.0], dtype=">f8")
    assert quantize(big, "float64").to_bytes() == np.array([1.0, 2.0], "<f8").tobytes()
    assert quantize(np.array([1.0]), "float32").to_bytes() == b"\x00\x00\x80\x3f"
    assert QuantizedArray("float64", big).to_bytes() == np.array([1.0, 2.0], "<f8").tobytes()


@pytest.mark.parametrize("value", [-3.25, 5e-324, 1e300])
def test_constant_arrays_come_back_exact(value: float) -> None:
    q = quantize(np.full(3, value), "int8")
    assert (q.scale, q.zero, dequantize(q).tolist()) == (0.0, value, [value] * 3)


def test_constant_and_empty_arrays() -> None:
    q = quantize(np.full(4, -3.25), "int8")
    assert (q.scale, q.zero, q.data.tolist()) == (0.0, -3.25, [0, 0, 0, 0])
    assert dequantize(q).tolist() == [-3.25] * 4
    for dtype in DTYPES:
        empty = quantize(np.zeros(0), dtype)
        assert empty.to_bytes() == b"" and dequantize(empty).shape == (0,)
        back = QuantizedArray.from_bytes(dtype, (0,), b"", empty.scale, empty.zero)
        assert dequantize(back).shape == (0,)


def test_measured_errors_on_standard_normal_vectors() -> None:
    values = np.random.default_rng(0).normal(0, 1, 1000)
    half = dequantize(quantize(values, "float16"))
    assert np.max(np.abs(half - values) / np.abs(values)) < 1.1e-3
    q8 = quantize(values, "int8")
    assert np.max(np.abs(dequantize(q8) - values)) <= q8.scale / 2 + 1e-12
    sizes = {d: len(quantize(values, d).to_bytes()) for d in DTYPES}
    assert sizes == {"float64": 8000, "float32": 4000, "float16": 2000, "int8": 1000}


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: quantize(np.array([np.nan]), "int8"), InvalidSummaryError),
        (lambda: quantize(np.array([np.inf]), "float32"), InvalidSummaryError),
        (lambda: quantize(np.array([1e6]), "float16"), ModelError),
        (lambda: quantize(np.array([1e39]), "float32"), ModelError),
        (lambda: quantize(np.ones(2), "int4"), ModelError),
        (lambda: QuantizedArray.from_bytes("int8", (3,), b"\x00\x01"), InvalidSummaryError),
        (lambda: QuantizedArray.from_bytes("int64", (1,), b"\x00" * 8), InvalidSummaryError),
        (lambda: QuantizedArray.from_bytes("int8", (-1,), b""), InvalidSummaryError),
        (lambda: QuantizedArray.from_bytes("float16", (1,), b"\x00\x7c"), InvalidSummaryError),
        (lambda: QuantizedArray.from_bytes("int8", (1,), b"\x01", -1.0), InvalidSummaryError),
        (lambda: QuantizedArray("int8", np.zeros(2)), ModelError),
    ],
)
def test_refusals_are_typed(call, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


def test_data_is_read_only() -> None:
    q = quantize(np.ones(3), "float32")
    with pytest.raises(ValueError):
        q.data[0] = 2.0
