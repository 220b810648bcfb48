"""The shared warmup + cosine schedule."""

import pytest
import torch

from zoo.optim import warmup_cosine


def test_warmup_then_cosine_to_floor():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = warmup_cosine(opt, total_steps=14, warmup_steps=4, min_lr_ratio=0.1)["scheduler"]
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # linear warmup
    assert lrs[4] == pytest.approx(2.0)  # cosine starts at the peak
    assert lrs[9] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # halfway: midpoint of peak and floor
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # monotone decay
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)  # ends at the floor


def test_bad_floor_is_rejected():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"min_lr_ratio must be in \[0, 1\], got 1.5"):
        warmup_cosine(opt, 10, 2, 1.5)
