"""PoseModelConfig: everything needed to rebuild a model and use its outputs.

A checkpoint stores this config as a plain dict, so a model file is self-describing: backbone,
joints, input size, output dims, input normalisation, flip pairs and the box enlargement factor.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .skeleton import COCO17, H36M18

OFFICIAL_MEAN_RGB = (0.406, 0.457, 0.480)   # official RLE code: per R, G, B channel
OFFICIAL_STD_3D_RGB = (0.225, 0.224, 0.229)  # official 3D model only; 2D divides by nothing
HEADS = ("rle", "heatmap")                   # architectures: the keys of models.build.MODEL_CLASSES
# RLE head layouts: the keys of models.head.RLE_HEADS (a checkpoint family's convention)
HEAD_LAYOUTS = ("official", "mmpose")
# box -> crop map conventions: the keys of models.geometry.CROP_MAPS
WARPS = ("official", "mmpose")
# mmpose's data preprocessor: ImageNet mean/std on 0-255 RGB, here divided by 255 (same values)
IMAGENET_MEAN_RGB = (123.675 / 255, 116.28 / 255, 103.53 / 255)
IMAGENET_STD_RGB = (58.395 / 255, 57.12 / 255, 57.375 / 255)


@dataclass(frozen=True)
class PoseModelConfig:
    """Architecture and conventions of one RLE pose model.

    Attributes:
        backbone: a timm model name (``resnet50``, ``convnext_tiny``, ...).
        joint_names: K joint names; ``num_joints`` is their count.
        edges: skeleton edges (i, j), for drawing.
        flip_pairs: (left, right) joint index pairs for flip augmentation and flip test.
        dims: 2 for (u, v), 3 for (u, v, d).
        input_hw: crop size (height, width) in pixels; the paper's 2D model is (256, 192).
        mean_rgb, std_rgb: the model normalises its [0, 1] RGB input as (x - mean) / std.
        box_factor: a box is enlarged by this factor before cropping (1.25 COCO, 1.0 Human3.6M).
        depth_range_mm: depth normalisation of 3D models (d = dz_mm / depth_range_mm); 2000 mm.
        root_index: root joint; 3D depth is made relative to it at eval time.
        sigma_eps: added to sigmoid(raw) (the official 3D model adds 1e-9; the 2D one adds 0).
        flow_hidden, flow_layers: RealNVP width and number of coupling layers (64, 6).
        source: provenance of the weights, e.g. ``"rle-pose"`` or ``"official:coco-laplace-rle.pth"``.
        head: ``"rle"`` (regression head + flow; official checkpoints) or ``"heatmap"`` (the
            SimpleBaseline deconvolution head of stage 1 of the two-stage recipe, 2D only): the
            architecture, from which ``models.build.build_model`` picks the model class. (A
            training run sets it from its loss: ``trainer.config.model_head_for_loss``.)
        head_layout: the RLE head's convention (``head`` "rle" only). ``"official"``: the official
            code's feature-normalised ``coord`` + plain ``sigma`` linears, mu in [-0.5, 0.5] of the
            crop. ``"mmpose"``: mmpose's one plain ``fc`` Linear(C, K*4) giving per joint (x, y,
            sigma_x logit, sigma_y logit) with x, y in [0, 1] of the crop (2D only); the head
            shifts them by -0.5, so its output, the loss, the flip test (mmpose's
            ``x' = 1 - x - 1/W`` is the official ``u' = -u - 1/W``) and the score (1 - mean sigma)
            are the same as the official ones downstream.
        warp: how the Predictor turns a box into the crop's affine map. ``"official"``: this
            project's float64 similarity; ``"mmpose"``: mmpose's float32 three-point
            ``cv2.getAffineTransform`` (the same map up to ~1e-5, but the very crop mmpose's
            inference gives its checkpoints; ``models.geometry.mmpose_crop_from_boxes``).
            Training crops (augmented) always use the official map.
    """

    backbone: str = "resnet50"
    joint_names: tuple[str, ...] = COCO17.joints
    edges: tuple[tuple[int, int], ...] = COCO17.edges
    flip_pairs: tuple[tuple[int, int], ...] = COCO17.flip_pairs
    dims: int = 2
    input_hw: tuple[int, int] = (256, 192)
    mean_rgb: tuple[float, float, float] = OFFICIAL_MEAN_RGB
    std_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    box_factor: float = 1.25
    depth_range_mm: float = 2000.0
    root_index: int = 0
    sigma_eps: float = 0.0
    flow_hidden: int = 64
    flow_layers: int = 6
    source: str = "rle-pose"
    head: str = "rle"
    head_layout: str = "official"
    warp: str = "official"

    def __post_init__(self) -> None:
        # Normalise list-typed values (from JSON/YAML/checkpoints) to tuples, then check.
        object.__setattr__(self, "joint_names", tuple(str(n) for n in self.joint_names))
        object.__setattr__(self, "edges", tuple((int(a), int(b)) for a, b in self.edges))
        object.__setattr__(self, "flip_pairs", tuple((int(a), int(b)) for a, b in self.flip_pairs))
        object.__setattr__(self, "input_hw", tuple(int(v) for v in self.input_hw))
        object.__setattr__(self, "mean_rgb", tuple(float(v) for v in self.mean_rgb))
        object.__setattr__(self, "std_rgb", tuple(float(v) for v in self.std_rgb))
        k = self.num_joints
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims}")
        if k < 1:
            raise ValueError("joint_names must name at least one joint")
        if len(self.input_hw) != 2 or min(self.input_hw) < 16:
            raise ValueError(f"input_hw must be (height, width) >= 16 pixels, got {self.input_hw}")
        if len(self.mean_rgb) != 3 or len(self.std_rgb) != 3 or min(self.std_rgb) <= 0:
            raise ValueError("mean_rgb and std_rgb need 3 values each, std > 0")
        if self.flow_layers % 2 or self.flow_layers < 2:
            raise ValueError(f"flow_layers must be an even number >= 2, got {self.flow_layers}")
        for a, b in self.flip_pairs + self.edges:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"joint index pair ({a}, {b}) outside 0..{k - 1}")
        if self.head not in HEADS or (self.head == "heatmap" and self.dims != 2):
            raise ValueError(f"head must be one of {', '.join(HEADS)} (heatmap: 2D only), got "
                             f"'{self.head}' with dims {self.dims}")
        if self.head_layout not in HEAD_LAYOUTS or (
                self.head_layout == "mmpose" and (self.dims != 2 or self.head != "rle")):
            raise ValueError(f"head_layout must be one of {', '.join(HEAD_LAYOUTS)} (mmpose: 2D rle only), "
                             f"got '{self.head_layout}' with dims {self.dims}")
        if self.warp not in WARPS:
            raise ValueError(f"warp must be one of {', '.join(WARPS)}, got '{self.warp}'")
        if not 0 <= self.root_index < k:
            raise ValueError(f"root_index {self.root_index} outside 0..{k - 1}")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def to_dict(self) -> dict:
        """Plain dict of lists/str/numbers (safe for ``torch.load(weights_only=True)`` and JSON)."""
        out = dataclasses.asdict(self)
        return {k: (list(map(list, v)) if k in ("edges", "flip_pairs") else
                    list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict) -> PoseModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> PoseModelConfig:
        return dataclasses.replace(self, **changes)


def coco_config(backbone: str = "resnet50", **changes) -> PoseModelConfig:
    """The paper's 2D COCO model: 17 joints, 256x192, official mean, no std, box x1.25."""
    return PoseModelConfig(backbone=backbone, **changes)


def mmpose_config(backbone: str = "resnet50", **changes) -> PoseModelConfig:
    """mmpose's 2D RLE models (``td-reg_*_rle-*_coco-256x192``): COCO-17, 256x192, mmpose's head
    layout, ImageNet mean/std, box x1.25 with the aspect fixed to W/H, and mmpose's crop map
    (``warp="mmpose"``: its ``get_warp_matrix``, this project's similarity computed in float32,
    not UDP)."""
    base = dict(mean_rgb=IMAGENET_MEAN_RGB, std_rgb=IMAGENET_STD_RGB, head_layout="mmpose", warp="mmpose")
    base.update(changes)
    return PoseModelConfig(backbone=backbone, **base)


def h36m_config(backbone: str = "resnet50", **changes) -> PoseModelConfig:
    """The paper's 3D Human3.6M model: 18 joints (u, v, d), 256x256, mean and std, box x1.0."""
    base = dict(joint_names=H36M18.joints, edges=H36M18.edges, flip_pairs=H36M18.flip_pairs,
                dims=3, input_hw=(256, 256), std_rgb=OFFICIAL_STD_3D_RGB, box_factor=1.0,
                root_index=H36M18.root, sigma_eps=1e-9)
    base.update(changes)
    return PoseModelConfig(backbone=backbone, **base)
