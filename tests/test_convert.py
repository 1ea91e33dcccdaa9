"""Original (safari) weights -> HyenaOperator: outputs must match an independent reference of the original."""

import pytest
import torch
from safari_reference import random_safari_state_dict, safari_operator_forward

from hyena_vision.layers import HyenaOperator, convert_safari_state_dict


def _converted_operator(sd, d_model, l_max, order, layout, modulate=True):
    filter_cfg = dict(filter_order=16, emb_dim=5, num_inner_mlps=2, modulate=modulate)
    op = HyenaOperator(d_model, l_max, order=order, filter_cfg=filter_cfg, dtype=torch.float64)
    op.load_state_dict(convert_safari_state_dict(sd, order, layout=layout))
    return op.eval()


@pytest.mark.parametrize("layout", ["hyena", "standalone"])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_converted_operator_matches_original(order, layout):
    d_model, l_max = 6, 24
    sd = random_safari_state_dict(d_model, l_max, order, emb_dim=5, filter_order=16)
    op = _converted_operator(sd, d_model, l_max, order, layout)
    for length in (l_max, 17):  # full length, and a prefix using the first samples of the filter
        u = torch.randn(2, length, d_model, dtype=torch.float64)
        expected = safari_operator_forward(sd, u, order, layout=layout)
        with torch.no_grad():
            actual = op(u)
        assert (actual - expected).abs().max() < 1e-10 * expected.abs().max()


def test_layouts_differ_for_order_3():
    """The v-major/o-major distinction is real: converting with the wrong layout changes the output."""
    d_model, l_max, order = 4, 16, 3
    sd = random_safari_state_dict(d_model, l_max, order, emb_dim=5, filter_order=16)
    u = torch.randn(1, l_max, d_model, dtype=torch.float64)
    expected = safari_operator_forward(sd, u, order, layout="hyena")
    with torch.no_grad():
        wrong = _converted_operator(sd, d_model, l_max, order, "standalone")(u)
    assert (wrong - expected).abs().max() > 1e-3 * expected.abs().max()


def test_modulation_off_matches_original_eval_setting():
    d_model, l_max, order = 4, 16, 2
    sd = random_safari_state_dict(d_model, l_max, order, emb_dim=5, filter_order=16)
    op = _converted_operator(sd, d_model, l_max, order, "hyena", modulate=False)
    u = torch.randn(2, l_max, d_model, dtype=torch.float64)
    expected = safari_operator_forward(sd, u, order, layout="hyena", modulate=False)
    with torch.no_grad():
        assert torch.allclose(op(u), expected, rtol=1e-10, atol=1e-12)


def test_converter_errors():
    sd = random_safari_state_dict(4, 8, 2)
    with pytest.raises(KeyError, match="unexpected key 'filter_fn.typo'"):
        convert_safari_state_dict({**sd, "filter_fn.typo": torch.zeros(1)}, 2)
    with pytest.raises(KeyError, match="missing keys.*out_proj.bias"):
        convert_safari_state_dict({k: v for k, v in sd.items() if k != "out_proj.bias"}, 2)
    with pytest.raises(ValueError, match="layout must be one of"):
        convert_safari_state_dict(sd, 2, layout="v-major")
    with pytest.raises(ValueError, match="not a multiple of order-1=2"):
        convert_safari_state_dict(random_safari_state_dict(3, 8, 2), 3)
