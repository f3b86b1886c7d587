"""SimpleBaseline heatmap model: stage 1 of the two-stage COCO recipe (official issues #3, #38).

Backbone feature map (unpooled, stride 32) -> 3 x (ConvTranspose2d 4x4 stride 2, 256 channels,
BN, ReLU) -> 1x1 conv to K heatmaps at 1/4 of the input resolution (Xiao et al., "Simple
Baselines for Human Pose Estimation", 2018). Its only purpose here is to pre-train a backbone
that ``--init-from`` then hands to an RLE run; it still returns ``PoseOutput(mu, sigma)`` so that
evaluation and the Predictor work unchanged.

Frames. Heatmap pixel (i, j) of an (h, w) heatmap stands for crop pixel (4 i, 4 j) when the
input is 4h x 4w: SimpleBaseline's convention (heatmap px = crop px / stride). A normalised
coordinate u in [-0.5, 0.5] sits at heatmap x = (u + 0.5) * w, and back u = x / w - 0.5. Targets
and decoding use the same map, so the network learns it consistently.

Decoding (``decode_heatmaps``): argmax per joint, then a quarter-pixel shift towards the higher
neighbour in x and in y (SimpleBaseline's ``get_final_preds``), not a soft-argmax. sigma is NOT
RLE's scale of a residual distribution: it is ``1 - clamp(maxval, 0, 1)`` for both coordinates,
chosen so that the keypoint confidence ``1 - mean(sigma)`` equals the heatmap peak value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import create_backbone, feature_dim
from .config import PoseModelConfig
from .pose_model import PixelNormalise, PoseOutput

DECONV_CHANNELS = 256      # SimpleBaseline: 3 deconvolutions of 256 channels
DECONV_LAYERS = 3
HEATMAP_STRIDE = 4         # heatmaps at 1/4 of the input resolution
TARGET_SIGMA = 2.0         # Gaussian target sigma in heatmap pixels (SimpleBaseline, 256x192)


def heatmap_hw(input_hw: tuple[int, int]) -> tuple[int, int]:
    """Heatmap size (h, w) for an input crop (H, W): (H // 4, W // 4)."""
    return input_hw[0] // HEATMAP_STRIDE, input_hw[1] // HEATMAP_STRIDE


class DeconvHead(nn.Module):
    """Feature map (N, C, h, w) -> heatmaps (N, K, 8h, 8w), SimpleBaseline layers and init
    (deconvolution and final conv weights normal std 0.001, BN weight 1 and bias 0)."""

    def __init__(self, in_channels: int, num_joints: int, channels: int = DECONV_CHANNELS,
                 layers: int = DECONV_LAYERS) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            deconv = nn.ConvTranspose2d(in_channels if i == 0 else channels, channels, 4, stride=2,
                                        padding=1, bias=False)
            nn.init.normal_(deconv.weight, std=0.001)
            blocks += [deconv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.deconv = nn.Sequential(*blocks)
        self.final = nn.Conv2d(channels, num_joints, 1)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(feats))


class HeatmapPoseModel(nn.Module):
    """Heatmap pose model with the PoseModel contract (models/build.py).

    ``forward(x)``: RGB crops (N, 3, H, W), float in [0, 1] or uint8, normalised with the config's
    mean/std buffers. Returns ``PoseOutput(mu, sigma, heatmaps)``: mu (N, K, 2) in the normalised
    crop frame (detached: argmax has no gradient), sigma (N, K, 2) = 1 - peak value (not RLE's
    sigma), heatmaps (N, K, H/4, W/4) (the training output). When the backbone's stride-32 map
    does not divide the input (e.g. 64x48 -> 2x2 -> 16x16), the heatmaps are resized bilinearly to
    (H/4, W/4). The loss is never computed in forward: call ``model.loss(out, target, weight)``.
    """

    def __init__(self, config: PoseModelConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else create_backbone(config.backbone)
        self.head = DeconvHead(feature_dim_map(self.backbone), config.num_joints)
        self.normalise = PixelNormalise(config.mean_rgb, config.std_rgb)

    def forward(self, x: torch.Tensor) -> PoseOutput:
        heatmaps = self.head(self.backbone.forward_features(self.normalise(x)))
        size = heatmap_hw(tuple(x.shape[-2:]))
        if tuple(heatmaps.shape[-2:]) != size:
            heatmaps = F.interpolate(heatmaps, size=size, mode="bilinear", align_corners=False)
        mu, sigma = decode_heatmaps(heatmaps.detach().float())
        return PoseOutput(mu, sigma, heatmaps)

    def loss(self, out: PoseOutput, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """JointsMSELoss of ``out.heatmaps`` against Gaussians at ``target`` (N, K, 2) normalised
        crop coordinates with ``weight`` (N, K) or (N, K, D) (the x column is used); fp32."""
        heatmaps = out.heatmaps.float()
        target_maps, w = heatmap_targets(target.float(), weight.float(), tuple(heatmaps.shape[-2:]))
        return joints_mse_loss(heatmaps, target_maps, w)


def feature_dim_map(backbone: nn.Module) -> int:
    """Channels of the backbone's unpooled ``forward_features`` map (timm's ``num_features``)."""
    dim = getattr(backbone, "num_features", None)
    return int(dim) if dim else feature_dim(backbone)


def heatmap_targets(target_norm: torch.Tensor, weight: torch.Tensor, hw: tuple[int, int],
                    sigma: float = TARGET_SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian target heatmaps (N, K, h, w) and per-joint weights (N, K).

    ``target_norm`` (N, K, >=2) normalised crop coordinates; the Gaussian (peak 1, ``sigma``
    heatmap px) is centred at the sub-pixel heatmap position x = (u + 0.5) * w (SimpleBaseline
    rounds the centre to a pixel; this does not, so decoding is unbiased), not truncated. Joints
    with weight 0, or whose centre lies more than 3 sigma outside the heatmap (SimpleBaseline
    drops those too), get weight 0 and an all-zero heatmap.
    """
    h, w = hw
    w_joint = weight[..., 0] if weight.dim() == 3 else weight
    cx = (target_norm[..., 0] + 0.5) * w                                     # (N, K) heatmap px
    cy = (target_norm[..., 1] + 0.5) * h
    margin = 3 * sigma
    inside = (cx >= -margin) & (cx <= w - 1 + margin) & (cy >= -margin) & (cy <= h - 1 + margin)
    w_joint = torch.where(inside & (w_joint > 0), w_joint, torch.zeros_like(w_joint))
    xs = torch.arange(w, dtype=target_norm.dtype, device=target_norm.device)
    ys = torch.arange(h, dtype=target_norm.dtype, device=target_norm.device)
    gx = torch.exp(-((xs - cx[..., None]) ** 2) / (2 * sigma ** 2))         # (N, K, w)
    gy = torch.exp(-((ys - cy[..., None]) ** 2) / (2 * sigma ** 2))         # (N, K, h)
    maps = gy[..., :, None] * gx[..., None, :] * (w_joint > 0)[..., None, None]
    return maps, w_joint


def joints_mse_loss(heatmaps: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """SimpleBaseline's JointsMSELoss (use_target_weight): for each joint k,
    0.5 * mean over batch and pixels of (w (pred - gt))^2, then the mean over joints.
    heatmaps, targets (N, K, h, w); weight (N, K)."""
    diff = (heatmaps - targets) * weight[..., None, None]
    return 0.5 * diff.pow(2).mean()


def decode_heatmaps(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (N, K, h, w) -> mu (N, K, 2) normalised crop coordinates and sigma (N, K, 2).

    argmax, then +-0.25 heatmap px towards the higher neighbour in x and y where both neighbours
    exist (no shift on a tie); a joint whose peak is <= 0 gets the heatmap origin (SimpleBaseline's
    mask). sigma = 1 - clamp(peak, 0, 1) on both coordinates: confidence = peak, not RLE's sigma.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    maxval, index = flat.max(dim=-1)
    px, py = (index % w), (index // w)
    x, y = px.to(heatmaps.dtype), py.to(heatmaps.dtype)
    x = x + 0.25 * _neighbour_sign(flat, index, px, w, 1)
    y = y + 0.25 * _neighbour_sign(flat, index, py, h, w)
    found = (maxval > 0).to(heatmaps.dtype)
    mu = torch.stack([x * found / w - 0.5, y * found / h - 0.5], dim=-1)
    sigma = (1.0 - maxval.clamp(0.0, 1.0))[..., None].expand(n, k, 2)
    return mu, sigma.contiguous()


def _neighbour_sign(flat: torch.Tensor, index: torch.Tensor, pos: torch.Tensor, size: int,
                    step: int) -> torch.Tensor:
    """sign(value at index + step - value at index - step) where 0 < pos < size - 1, else 0."""
    ok = (pos > 0) & (pos < size - 1)
    hi = torch.gather(flat, -1, torch.where(ok, index + step, index)[..., None])[..., 0]
    lo = torch.gather(flat, -1, torch.where(ok, index - step, index)[..., None])[..., 0]
    return torch.sign(hi - lo) * ok.to(flat.dtype)
