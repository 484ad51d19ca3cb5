"""opensora_core.utils: leaf helpers shared across layers."""

import pytest
import torch
from torch import nn

from opensora_core.utils.modules import module_dtype


def test_module_dtype_first_parameter_or_default():
    assert module_dtype(nn.Linear(2, 2).to(torch.bfloat16)) == torch.bfloat16
    assert module_dtype(nn.Identity(), torch.float16) == torch.float16  # no parameters
    assert module_dtype(object(), torch.float32) == torch.float32  # not a module
    with pytest.raises(ValueError, match="Identity has no parameters"):
        module_dtype(nn.Identity())
