"""dlcourse.quantization: the bytes a quantised model really stores (tensor subclasses counted by their inner
tensors), checked against torchao's int8 and int4 layouts and against torch.save."""

import io

import pytest
import torch
import torchao.quantization as tq  # the export extra, which `make test` installs: missing, it is an error
from torch import nn
from torchao.quantization.granularity import PerAxis

from dlcourse.quantization import inner_tensors, state_dict_bytes, stored_bytes


def _mlp(widths, seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _int8_bytes(widths):
    """int8 codes (out × in), a float32 scale and an int8 zero point per row, float32 biases."""
    return sum(o * i + o * (4 + 1) + 4 * o for i, o in zip(widths[:-1], widths[1:]))


def test_plain_tensors_and_parameters():
    x = torch.zeros(3, 5, dtype=torch.float16)
    assert stored_bytes(x) == 30 and inner_tensors(x) == {}
    assert stored_bytes(nn.Parameter(torch.zeros(7))) == 28
    assert stored_bytes(torch.zeros(10, 10)[:, :2]) == 80          # a view counts its own elements
    model = _mlp([6, 4, 2])
    assert state_dict_bytes(model) == 4 * (6 * 4 + 4 + 4 * 2 + 2) == state_dict_bytes(model.state_dict())


@pytest.mark.parametrize("widths", [[64, 32, 10], [12, 5], [100, 300, 200, 7]])
def test_int8_weights_count_codes_scales_zero_points_and_float_biases(widths):
    model = _mlp(widths)
    tq.quantize_(model, tq.Int8WeightOnlyConfig())
    weight = model[0].weight
    assert weight.nbytes == 4 * weight.numel()                      # the subclass reports float32 bytes
    assert set(inner_tensors(weight)) == {"qdata", "scale", "zero_point"}
    assert stored_bytes(weight) == weight.numel() + 5 * weight.shape[0]
    assert state_dict_bytes(model) == _int8_bytes(widths)


def test_unpacked_int4_takes_as_many_bytes_as_int8():
    widths = [64, 48, 10]
    int8, int4 = _mlp(widths), _mlp(widths)
    tq.quantize_(int8, tq.Int8WeightOnlyConfig())
    tq.quantize_(int4, tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerAxis(0)))
    assert int4[0].weight.qdata.abs().max() <= 8
    assert state_dict_bytes(int4) == state_dict_bytes(int8) == _int8_bytes(widths)


def test_saved_file_is_the_stored_bytes_plus_overhead():
    model = _mlp([256, 256, 10])
    fp32 = io.BytesIO()
    torch.save(model.state_dict(), fp32)
    tq.quantize_(model, tq.Int8WeightOnlyConfig())
    int8 = io.BytesIO()
    torch.save(model.state_dict(), int8)
    assert state_dict_bytes(model) < int8.tell() < state_dict_bytes(model) + 20_000
    assert int8.tell() < 0.3 * fp32.tell()


def test_non_tensor_entries_count_zero():
    assert state_dict_bytes({"a": torch.zeros(2), "meta": 3, "name": "x"}) == 8
