"""NT-Xent against a direct per-pair implementation of the formula."""

import math

import pytest
import torch

from gsimclr.loss import NTXentLoss, nt_xent


def reference_nt_xent(views: torch.Tensor, t: float, pseudo=None) -> float:
    """Loop over every (anchor, positive) pair, exactly as the formula reads."""
    v, n, _ = views.shape
    z = torch.nn.functional.normalize(views.double(), dim=-1)
    items = [(a, i) for a in range(v) for i in range(n)]
    total, count = 0.0, 0
    for a, i in items:
        denom = 0.0
        for b, j in items:
            if (b, j) == (a, i):
                continue
            if pseudo is not None and j != i and pseudo[j] == pseudo[i]:
                continue
            denom += math.exp(float(z[a, i] @ z[b, j]) / t)
        for b in range(v):
            if b != a:
                total += -(float(z[a, i] @ z[b, i]) / t - math.log(denom))
                count += 1
    return total / count


@pytest.mark.parametrize("n_views", [2, 3, 4])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_per_pair_formula(n_views, temperature):
    torch.manual_seed(n_views)
    views = torch.randn(n_views, 6, 5)
    assert nt_xent(views, temperature).item() == pytest.approx(reference_nt_xent(views, temperature), rel=1e-5)


def test_false_negative_masking_matches_formula():
    torch.manual_seed(0)
    views = torch.randn(2, 8, 4)
    pseudo = torch.tensor([0, 1, 0, 2, 1, 3, 3, 0])
    got = nt_xent(views, 0.2, pseudo_labels=pseudo).item()
    assert got == pytest.approx(reference_nt_xent(views, 0.2, pseudo.tolist()), rel=1e-5)
    # masking removes positive terms from the denominator, so the loss can only drop
    assert got < nt_xent(views, 0.2).item()


def test_distinct_pseudo_labels_equal_no_masking():
    views = torch.randn(2, 8, 4)
    assert nt_xent(views, 0.1, pseudo_labels=torch.arange(8)).item() == pytest.approx(nt_xent(views, 0.1).item())


def test_perfect_alignment_gives_lower_loss_than_random():
    torch.manual_seed(1)
    z = torch.randn(16, 32)
    aligned = nt_xent(torch.stack([z, z]), 0.1)
    random = nt_xent(torch.randn(2, 16, 32), 0.1)
    assert aligned < random


def test_module_form_and_gradients():
    z1 = torch.randn(4, 8, requires_grad=True)
    z2 = torch.randn(4, 8, requires_grad=True)
    loss = NTXentLoss(temperature=0.5)(z1, z2)
    loss.backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()
    assert loss.item() == pytest.approx(reference_nt_xent(torch.stack([z1, z2]).detach(), 0.5), rel=1e-5)


def test_rejects_single_view():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(1, 4, 8))
