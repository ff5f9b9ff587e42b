"""NT-Xent against a direct per-pair implementation of the formula."""

import math

import pytest
import torch

from gsimclr.loss import NTXentLoss, nt_xent


def reference_nt_xent(views: torch.Tensor, t: float, pseudo=None, guidance: str = "mask") -> float:
    """Loop over every anchor and its positives, exactly as the formula reads: ``mask`` drops
    same-pseudo-label candidates from the denominator, ``attract`` makes them positives (SupCon L_out)."""
    v, n, _ = views.shape
    z = torch.nn.functional.normalize(views.double(), dim=-1)
    items = [(a, i) for a in range(v) for i in range(n)]
    total = 0.0
    for a, i in items:
        denom, positives = 0.0, []
        for b, j in items:
            if (b, j) == (a, i):
                continue
            same_label = pseudo is not None and j != i and pseudo[j] == pseudo[i]
            if same_label and guidance == "mask":
                continue
            denom += math.exp(float(z[a, i] @ z[b, j]) / t)
            if j == i or (same_label and guidance == "attract"):
                positives.append(float(z[a, i] @ z[b, j]) / t)
        total += sum(-(s - math.log(denom)) for s in positives) / len(positives)
    return total / len(items)


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


@pytest.mark.parametrize("n_views", [2, 3])
def test_attraction_matches_formula(n_views):
    torch.manual_seed(2)
    views = torch.randn(n_views, 8, 4)
    pseudo = torch.tensor([0, 1, 0, 2, 1, 3, 3, 0])
    got = nt_xent(views, 0.2, pseudo_labels=pseudo, guidance="attract").item()
    assert got == pytest.approx(reference_nt_xent(views, 0.2, pseudo.tolist(), "attract"), rel=1e-5)
    assert got != pytest.approx(nt_xent(views, 0.2).item(), rel=1e-3)
    # guidance "none" ignores the labels; distinct labels make every guidance the plain loss
    assert nt_xent(views, 0.2, pseudo, guidance="none").item() == pytest.approx(nt_xent(views, 0.2).item())
    distinct = nt_xent(views, 0.2, torch.arange(8), guidance="attract").item()
    assert distinct == pytest.approx(nt_xent(views, 0.2).item(), rel=1e-6)


def test_attraction_pulls_same_label_images_together():
    """The gradient of ``attract`` moves two same-label images towards each other; ``mask`` does not act on them."""
    torch.manual_seed(3)
    z = torch.randn(2, 6, 8, requires_grad=True)
    pseudo = torch.tensor([0, 0, 1, 2, 3, 4])
    nt_xent(z, 0.5, pseudo, guidance="attract").backward()
    with torch.no_grad():
        stepped = z - 0.1 * z.grad
        before = torch.nn.functional.cosine_similarity(z[0, 0], z[0, 1], dim=0)
        after = torch.nn.functional.cosine_similarity(stepped[0, 0], stepped[0, 1], dim=0)
    assert after > before


def test_unknown_guidance_is_rejected():
    with pytest.raises(ValueError, match="guidance must be one of"):
        nt_xent(torch.randn(2, 4, 8), 0.1, torch.arange(4), guidance="bogus")


def test_logits_in_fp32_under_bf16_autocast():
    """Under bf16 autocast the loss and its gradient match fp32 (the matmul would be bf16 otherwise)."""
    torch.manual_seed(4)
    base = torch.randn(2, 64, 32)
    pseudo = torch.randint(0, 8, (64,))
    for guidance in ("none", "attract"):
        exact = base.clone().requires_grad_()
        loss = nt_xent(exact, 0.1, pseudo, guidance=guidance)
        loss.backward()
        mixed = base.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_bf16 = nt_xent(mixed, 0.1, pseudo, guidance=guidance)
        loss_bf16.backward()
        assert loss_bf16.dtype == torch.float32
        assert abs(loss_bf16.item() - loss.item()) / loss.item() < 1e-6
        rel = (mixed.grad - exact.grad).norm() / exact.grad.norm()
        assert rel < 1e-5
        # what the bf16 matmul it replaces would have done: errors around 1e-2
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = torch.nn.functional.normalize(base.reshape(128, 32), dim=-1)
            low = (z @ z.T).float()
        high = torch.nn.functional.normalize(base.reshape(128, 32), dim=-1) @ torch.nn.functional.normalize(
            base.reshape(128, 32), dim=-1).T
        assert (low - high).abs().max() > 1e-3
