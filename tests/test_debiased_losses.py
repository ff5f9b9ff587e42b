"""The debiased (Chuang et al. 2020) and hard-negative (Robinson et al. 2021) losses against an
independent float64 implementation of the papers' estimators (tests/contrastive_reference.py): loss and
gradients, with and without --guidance mask, with the clamp at N e^(-1/t) binding; their limits
(tau+ = 0: NT-Xent; beta = 0: the debiased loss); their chance levels; their entries and options.
Over two gloo processes: tests/test_distributed.py."""

from __future__ import annotations

import math

import pytest
import torch
from contrastive_reference import reference_losses

from gsimclr.loss import LOSSES, build_criterion, loss_entry
from gsimclr.loss.debiased import DebiasedLoss, debiased_loss
from gsimclr.loss.hard_negative import HardNegativeLoss, hard_negative_loss
from gsimclr.loss.ntxent import nt_xent


def _loss(kind: str, views, t, tau_plus, beta=None, pseudo=None, guidance="mask"):
    if kind == "debiased":
        return debiased_loss(views, t, tau_plus, pseudo, guidance=guidance)
    return hard_negative_loss(views, t, tau_plus, beta, pseudo, guidance=guidance)


def _check_against_reference(kind, views, t, tau_plus, beta=None, pseudo=None, tol=None) -> int:
    """Loss and gradient of ``views`` equal the float64 reference within ``tol`` (default: 1e-12 for float64
    views, which the losses compute in float64; for float32 views 1e-6 for the loss and 1e-5 for the
    gradients: the float32 similarities' rounding, 1e-7, is amplified by up to (1 + beta) / t, to 8e-6
    at beta = 2, t = 0.2); returns the anchors where the clamp bound."""
    if tol is None:
        tol = 1e-12 if views.dtype == torch.float64 else 1e-6
    grad_tol = tol if views.dtype == torch.float64 else 10 * tol
    mine = views.clone().requires_grad_()
    loss = _loss(kind, mine, t, tau_plus, beta, pseudo)
    loss.backward()
    ref_views = views.detach().double().requires_grad_()
    per_anchor, clamped = reference_losses(ref_views, t, tau_plus, beta if kind == "hard-negative" else None,
                                           None if pseudo is None else pseudo.tolist())
    ref = per_anchor.mean()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=tol, abs=tol)
    torch.testing.assert_close(mine.grad.double(), ref_views.grad, rtol=grad_tol, atol=grad_tol)
    return clamped


CASES = [(v, t, tau) for v in (2, 3) for t in (0.1, 0.5) for tau in (0.0, 0.1, 0.4)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_views,t,tau_plus", CASES)
def test_debiased_equals_the_papers_estimator(n_views, t, tau_plus, dtype):
    g = torch.Generator().manual_seed(n_views * 100 + int(t * 10) + int(tau_plus * 10))
    views = torch.randn(n_views, 10, 6, generator=g, dtype=dtype)
    _check_against_reference("debiased", views, t, tau_plus)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("n_views,t,tau_plus", [(2, 0.5, 0.1), (2, 0.1, 0.0), (3, 0.2, 0.3)])
def test_hard_negative_equals_the_official_estimator(n_views, t, tau_plus, beta, dtype):
    g = torch.Generator().manual_seed(n_views + int(beta * 10))
    views = torch.randn(n_views, 10, 6, generator=g, dtype=dtype)
    _check_against_reference("hard-negative", views, t, tau_plus, beta)


@pytest.mark.parametrize("kind", ["debiased", "hard-negative"])
@pytest.mark.parametrize("n_views", [2, 3])
def test_mask_guidance_drops_same_label_negatives_and_counts_only_the_kept(kind, n_views):
    g = torch.Generator().manual_seed(5 + n_views)
    views = torch.randn(n_views, 12, 6, generator=g)
    pseudo = torch.tensor([0, 1, 0, 2, 1, 3, 3, 0, 4, 2, 0, 5])
    _check_against_reference(kind, views, 0.2, 0.2, 1.0, pseudo)
    _check_against_reference(kind, views.double(), 0.2, 0.2, 1.0, pseudo)
    # labels change the loss; guidance none ignores them; distinct labels mask nothing
    plain = _loss(kind, views, 0.2, 0.2, 1.0)
    assert _loss(kind, views, 0.2, 0.2, 1.0, pseudo).item() != pytest.approx(plain.item(), rel=1e-4)
    assert _loss(kind, views, 0.2, 0.2, 1.0, pseudo, guidance="none").item() == plain.item()
    assert _loss(kind, views, 0.2, 0.2, 1.0, torch.arange(12)).item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["debiased", "hard-negative"])
def test_an_anchor_whose_candidates_all_share_its_label_has_no_negatives(kind):
    views = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(3))
    pseudo = torch.tensor([0, 0, 0, 1, 1, 2])   # image 5 keeps negatives, the others too; then all one label
    _check_against_reference(kind, views, 0.5, 0.1, 1.0, pseudo)
    z = views.clone().requires_grad_()
    loss = _loss(kind, z, 0.5, 0.1, 1.0, torch.zeros(6, dtype=torch.long))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-7) and torch.isfinite(z.grad).all()  # Ng = 0: -log(pos/pos)


@pytest.mark.parametrize("kind", ["debiased", "hard-negative"])
def test_the_clamp_at_n_exp_minus_one_over_t_binds_and_matches(kind):
    """Positives close to their anchor and a large tau+: the estimate goes below N e^(-1/t) for some
    anchors (not all), where the loss is -log(pos / (pos + N e^(-1/t))) and Ng carries no gradient."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(10, 8, generator=g)
    views = torch.stack([base, base + 0.05 * torch.randn(10, 8, generator=g)])
    views[1, :4] = torch.randn(4, 8, generator=g)         # four images whose views disagree: no clamp there
    clamped = _check_against_reference(kind, views, 0.5, 0.6, 1.0)
    assert 0 < clamped < 20
    assert _check_against_reference(kind, views.double(), 0.5, 0.6, 1.0) == clamped
    # at tau+ = 0 the clamp never binds
    assert _check_against_reference(kind, views, 0.5, 0.0, 1.0) == 0


def test_debiased_at_tau_plus_zero_is_ntxent_with_two_views():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 16, 8, generator=g)
    pseudo = torch.randint(0, 5, (16,), generator=g)
    for labels in (None, pseudo):
        a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
        la, lb = debiased_loss(a, 0.1, 0.0, labels), nt_xent(b, 0.1, labels)
        la.backward(), lb.backward()
        assert la.item() == pytest.approx(lb.item(), rel=1e-6)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_hard_negative_at_beta_zero_is_the_debiased_loss():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(3, 12, 8, generator=g)
    pseudo = torch.randint(0, 4, (12,), generator=g)
    for labels in (None, pseudo):
        a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
        la, lb = hard_negative_loss(a, 0.2, 0.3, 0.0, labels), debiased_loss(b, 0.2, 0.3, labels)
        la.backward(), lb.backward()
        assert la.item() == pytest.approx(lb.item(), rel=1e-6)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    # and beta > 0 weighs the hard negatives more: a different loss
    assert hard_negative_loss(base, 0.2, 0.3, 1.0).item() != pytest.approx(debiased_loss(base, 0.2, 0.3).item(), rel=1e-3)


@pytest.mark.parametrize("kind", ["debiased", "hard-negative"])
def test_a_small_temperature_does_not_overflow(kind):
    """At t = 0.01 e^(1/t) is beyond float32 (the official code's exponentials would be inf); the shifted
    computation stays finite and matches the float64 reference."""
    g = torch.Generator().manual_seed(4)
    base = torch.randn(10, 8, generator=g)
    views = torch.stack([base, base + 0.3 * torch.randn(10, 8, generator=g)])
    mine = views.clone().requires_grad_()
    loss = _loss(kind, mine, 0.01, 0.1, 0.5)
    loss.backward()
    ref = reference_losses(views.double(), 0.01, 0.1, 0.5 if kind == "hard-negative" else None)[0].mean()
    assert torch.isfinite(mine.grad).all()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("name,n_views", [("ntxent", 2), ("ntxent", 3), ("debiased", 2), ("debiased", 3),
                                          ("hard-negative", 2), ("hard-negative", 4)])
def test_chance_loss_is_the_loss_of_collapsed_embeddings(name, n_views):
    """Each criterion's chance_loss (the trainer's collapse warning) equals the loss it computes on
    collapsed embeddings, over an epoch of unequal batches."""
    from gsimclr.config import load_config

    cfg = load_config(None, {"loss": name, "temperature": 0.2, "tau_plus": 0.3, "beta": 2.0})
    criterion = build_criterion(cfg)
    sizes = [6, 6, 3]
    collapsed = [float(criterion(torch.ones(n_views, b, 5))) * b for b in sizes]
    assert criterion.chance_loss(sizes, n_views) == pytest.approx(sum(collapsed) / sum(sizes), rel=1e-6)
    if name != "ntxent":  # log(1 + V (b - 1)), whatever tau+ and beta
        assert criterion.chance_loss([6], n_views) == pytest.approx(math.log(1 + n_views * 5))


def test_entries_builders_and_refusals():
    from gsimclr.config import load_config

    assert LOSSES.names() == ["ntxent", "debiased", "hard-negative"]
    assert [loss_entry(n).title for n in LOSSES.names()] == ["NT-Xent loss", "debiased contrastive loss",
                                                             "hard-negative contrastive loss"]
    cfg = load_config(None, {"loss": "hard-negative", "tau_plus": 0.2, "beta": 0.5, "temperature": 0.3})
    criterion = build_criterion(cfg)
    assert isinstance(criterion, HardNegativeLoss) and (criterion.tau_plus, criterion.beta) == (0.2, 0.5)
    assert isinstance(build_criterion(load_config(None, {"loss": "debiased"})), DebiasedLoss)
    with pytest.raises(ValueError, match="not defined with guidance 'attract'"):
        debiased_loss(torch.randn(2, 4, 3), 0.1, 0.1, torch.arange(4), guidance="attract")
    with pytest.raises(ValueError, match=r"tau_plus must be in \[0, 1\)"):
        DebiasedLoss(0.1, 1.0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        hard_negative_loss(torch.randn(2, 4, 3), beta=-1.0)
    # attract without labels is just the loss (an unguided method of a run whose --guidance is attract)
    DebiasedLoss(guidance="attract")(torch.randn(2, 4, 3))


def test_bf16_autocast_keeps_fp32_logits():
    g = torch.Generator().manual_seed(6)
    base = torch.randn(2, 32, 16, generator=g)
    exact = hard_negative_loss(base, 0.1, 0.1, 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = hard_negative_loss(base, 0.1, 0.1, 1.0)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(exact.item(), rel=1e-6)


def test_loss_curves_and_the_table_are_titled_by_the_loss(tmp_path, monkeypatch):
    """The loss curves' axis label comes from the --loss entry (MoCo keeps its own), and the run's table
    names a --loss other than NT-Xent beside the methods that train with it."""
    import json

    import yaml

    from gsimclr import pipeline
    from gsimclr.methods import loss_title
    from gsimclr.report import markdown_table

    assert loss_title("simclr", "debiased") == "debiased contrastive loss"
    assert loss_title("gsimclr") == "NT-Xent loss" and loss_title("moco", "ntxent") == "InfoNCE loss (queue)"
    for loss, expected in (("hard-negative", "hard-negative contrastive loss"), ("ntxent", "NT-Xent loss")):
        (tmp_path / loss / "simclr").mkdir(parents=True)
        (tmp_path / loss / "config.yaml").write_text(yaml.safe_dump({"data": "digits", "loss": loss}))
        (tmp_path / loss / "simclr" / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 2.0}) + "\n")
        seen = []
        monkeypatch.setattr(pipeline, "plot_curves", lambda curves, path, ylabel, *a, **k: seen.append(ylabel))
        pipeline.plot_run_curves(tmp_path / loss)
        assert seen == [expected]
    results = {"loss": "debiased", "methods": {"simclr": {"knn": 50.0}, "moco": {"knn": 40.0}}}
    assert markdown_table(results).splitlines()[0] == "| top-1 % | SimCLR (debiased) | MoCo |"
    assert markdown_table({**results, "loss": "ntxent"}).splitlines()[0] == "| top-1 % | SimCLR | MoCo |"


def test_resume_compares_the_loss_options_and_ntxent_runs_keep_their_provenance():
    """A resumed pretraining stage made with another --tau-plus is refused (its provenance holds the loss's
    options); an NT-Xent stage's provenance holds no loss option, so older run folders still resume."""
    from types import SimpleNamespace

    from gsimclr.config import load_config
    from gsimclr.pipeline import pretrain_provenance
    from gsimclr.run_folder import differences

    train = SimpleNamespace(fingerprint="f")
    made = pretrain_provenance(load_config(None, {"loss": "hard-negative", "tau_plus": 0.1}), train, "simclr", None)
    now = pretrain_provenance(load_config(None, {"loss": "hard-negative", "tau_plus": 0.2}), train, "simclr", None)
    assert differences(made, now) == ["--tau-plus: 0.1 -> 0.2"]
    assert {"tau_plus", "beta"} <= set(made["config"])
    plain = pretrain_provenance(load_config(None, {}), train, "gsimclr", None)
    assert not {"tau_plus", "beta"} & set(plain["config"])


def test_the_loss_options_are_declared_by_the_loss_entries_not_the_core_config():
    """--tau-plus and --beta belong to the debiased / hard-negative registrations (one Loss record each,
    as a plug-in's loss): not core options, read by the entries that declare them, with defaults that
    make an older provenance record without them no different."""
    from types import SimpleNamespace

    from gsimclr.config import _CORE, load_config, option_default, option_readers
    from gsimclr.pipeline import pretrain_provenance
    from gsimclr.run_folder import differences

    assert not {"tau_plus", "beta"} & {name for name, _, _ in _CORE}
    assert [entry for _, entry in option_readers("tau_plus")] == ["debiased", "hard-negative"]
    assert [entry for _, entry in option_readers("beta")] == ["hard-negative"]
    assert LOSSES.declarations["hard-negative"].options == loss_entry("hard-negative").options
    assert LOSSES.declarations["debiased"].titles == {"loss": "debiased contrastive loss"}
    assert (option_default("tau_plus"), option_default("beta")) == (0.1, 1.0)
    train = SimpleNamespace(fingerprint="f")
    now = pretrain_provenance(load_config(None, {"loss": "hard-negative"}), train, "simclr", None)
    older = {**now, "config": {k: v for k, v in now["config"].items() if k not in ("tau_plus", "beta")}}
    assert differences(older, now) == []   # made before the options existed, at their defaults
    changed = pretrain_provenance(load_config(None, {"loss": "hard-negative", "beta": 2.0}), train, "simclr", None)
    assert differences(older, changed) == ["--beta: unset -> 2.0"]
