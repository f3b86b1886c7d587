import math

import torch

from models.loss import RLELoss


def _identity_flow_loss(dims):
    """An RLELoss whose flows are the identity (last layers zero): log_phi = log N(bar; 0, I)."""
    loss = RLELoss(dims)
    for flow in (loss.flow2d, loss.flow3d):
        if flow is None:
            continue
        for nets in (flow.s, flow.t):
            for net in nets:
                torch.nn.init.zeros_(net[4].weight)
                torch.nn.init.zeros_(net[4].bias)
    return loss


def _hand_loss(mu, sigma, gt, w, log_phi_fn):
    """Independent per-element evaluation of the official formula (explicit loops): the flow term
    takes the u weight in 2D (``gt_uv_weight[:, :, :1]``), each coordinate's own weight in 3D."""
    batch, joints, dims = mu.shape
    total = 0.0
    for b in range(batch):
        for k in range(joints):
            use = [d for d in range(dims)] if w[b, k, -1] > 0 else [0, 1]
            bar = [(mu[b, k, d] - gt[b, k, d]) / sigma[b, k, d] for d in use]
            log_phi = log_phi_fn(bar)
            for d in range(dims):
                nf = math.log(sigma[b, k, d]) - log_phi
                q = math.log(sigma[b, k, d] * math.sqrt(2 * math.pi)) + \
                    abs(gt[b, k, d] - mu[b, k, d]) / (math.sqrt(2) * sigma[b, k, d] + 1e-9)
                w_nf = w[b, k, 0] if dims == 2 else w[b, k, d]
                total += nf * w_nf + q * w[b, k, d]
    return total / batch


def _std_normal_log(bar):
    return -0.5 * sum(v * v for v in bar) - 0.5 * len(bar) * math.log(2 * math.pi)


def test_2d_loss_equals_hand_computation_with_broadcast_quirk():
    torch.manual_seed(3)
    mu, gt = torch.rand(3, 4, 2) - 0.5, torch.rand(3, 4, 2) - 0.5
    sigma = torch.rand(3, 4, 2) * 0.5 + 0.01
    w = torch.ones(3, 4, 2)
    w[0, 1] = 0
    loss = _identity_flow_loss(2)(mu, sigma, gt, w)
    expected = _hand_loss(mu.double(), sigma.double(), gt.double(), w.double(), _std_normal_log)
    assert abs(loss.item() - expected) < 1e-4 * max(1.0, abs(expected))


def _official_2d(mu, sigma, gt, w):
    """The official code's RLELoss 2D formula (github.com/Jeff-sjtu/res-loglikelihood-regression),
    vectorised, with an identity flow (log_phi = log N(bar; 0, I)):
    (nf_loss * w[:, :, :1] + logQ * w).sum() / batch, nf_loss = log(sigma) - log_phi (B, K, 1)."""
    bar = (mu - gt) / sigma
    log_phi = (-0.5 * bar ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    nf_loss = torch.log(sigma) - log_phi
    log_q = torch.log(sigma * math.sqrt(2 * math.pi)) + (gt - mu).abs() / (math.sqrt(2) * sigma + 1e-9)
    return ((nf_loss * w[:, :, :1] + log_q * w).sum() / mu.shape[0]).item()


def test_2d_flow_term_takes_the_u_weight_as_the_official_code():
    """Unequal u/v weights: the flow term is weighted by w_u for both coordinates, log Q by each
    coordinate's own weight (a full-weight flow term would give a different value)."""
    torch.manual_seed(5)
    mu, gt = torch.rand(3, 6, 2) - 0.5, torch.rand(3, 6, 2) - 0.5
    sigma = torch.rand(3, 6, 2) * 0.5 + 0.01
    w = torch.rand(3, 6, 2)
    w[0, 1] = torch.tensor([1.0, 0.0])
    w[1, 2] = torch.tensor([0.0, 1.0])
    loss = _identity_flow_loss(2)(mu, sigma, gt, w).item()
    d = (mu.double(), sigma.double(), gt.double(), w.double())
    expected = _official_2d(*d)
    assert abs(loss - expected) < 1e-5 * max(1.0, abs(expected))
    assert abs(_hand_loss(*d, _std_normal_log) - expected) < 1e-9 * max(1.0, abs(expected))
    bar = (d[0] - d[2]) / d[1]   # the other reading (flow term x each coordinate's weight), for contrast
    nf = torch.log(d[1]) + 0.5 * (bar ** 2).sum(-1, keepdim=True) + math.log(2 * math.pi)
    full_weight = expected + ((nf * d[3] - nf * d[3][:, :, :1]).sum() / 3).item()
    assert abs(loss - full_weight) > 1e-2


def test_3d_loss_uses_2d_flow_for_joints_without_depth():
    torch.manual_seed(4)
    mu, gt = torch.rand(2, 5, 3) - 0.5, torch.rand(2, 5, 3) - 0.5
    sigma = torch.rand(2, 5, 3) * 0.5 + 0.01
    w = torch.ones(2, 5, 3)
    w[1, :, 2] = 0  # a 2D-only sample (MPII)
    w[0, 3] = 0
    crit = _identity_flow_loss(3)
    expected = _hand_loss(mu.double(), sigma.double(), gt.double(), w.double(), _std_normal_log)
    assert abs(crit(mu, sigma, gt, w).item() - expected) < 1e-4 * max(1.0, abs(expected))


def test_terms_sum_and_flow_receives_gradient():
    crit = RLELoss(2)
    mu = (torch.rand(4, 17, 2) - 0.5).requires_grad_()
    sigma = torch.rand(4, 17, 2).clamp(0.05, 0.9)
    terms = crit.terms(mu, sigma, torch.zeros(4, 17, 2), torch.ones(4, 17, 2))
    torch.testing.assert_close(terms.total, terms.nf + terms.log_q)
    terms.total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crit.flow2d.parameters())


def test_gradients_finite_for_sigma_near_zero_and_one():
    crit = RLELoss(2)
    for value in (1e-12, 1e-6, 1 - 1e-7, 1.0):
        raw = torch.full((2, 3, 2), value, requires_grad=True)
        mu = (torch.rand(2, 3, 2) - 0.5).requires_grad_()
        loss = crit(mu, raw, torch.zeros(2, 3, 2), torch.ones(2, 3, 2))
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(mu.grad).all() and torch.isfinite(raw.grad).all()


def test_zero_weight_gives_zero_loss_and_runs_in_fp32_under_autocast():
    crit = RLELoss(2)
    out = crit(torch.rand(2, 3, 2), torch.rand(2, 3, 2) + 0.1, torch.rand(2, 3, 2), torch.zeros(2, 3, 2))
    assert out.item() == 0.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        val = crit(torch.rand(2, 3, 2).bfloat16(), torch.rand(2, 3, 2).bfloat16() + 0.1,
                   torch.rand(2, 3, 2), torch.ones(2, 3, 2))
    assert val.dtype == torch.float32
