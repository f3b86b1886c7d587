"""rle-pose models: pure torch. Backbone + RLE head + RealNVP flow, checkpoints, crop geometry,
and the Predictor (numpy image + boxes in, keypoints in image pixels out)."""
from .build import PoseModel, build_model
from .checkpoint import CheckpointError, load_model, save_checkpoint
from .config import PoseModelConfig, coco_config, h36m_config
from .loss import RLELoss
from .pose_model import PoseOutput, RLEPoseModel
from .predictor import PosePrediction, Predictor

__all__ = [
    "CheckpointError", "PoseModel", "PoseModelConfig", "PoseOutput", "PosePrediction", "Predictor",
    "RLELoss", "RLEPoseModel", "build_model", "coco_config", "h36m_config", "load_model", "save_checkpoint",
]
