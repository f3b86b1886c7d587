"""The generated-data renderer: small synthetic pose data sets in the real on-disk layouts.

``figures`` (3D bodies, poses, cameras), ``render`` (painting with OpenCV, visibility), ``h36m``
(Human3.6M sequences), ``writers`` (scenes, the COCO / MPII / Human3.6M writers). The writers'
public names are re-exported here: ``from trainer.data.synthetic import SyntheticSpec, write_coco``.
"""
from trainer.data.synthetic.writers import (H36M_ACTIONS, SceneSample, SyntheticSpec, coco_detections,
                                            keypoints_triplets, render_person_image, write_coco, write_h36m,
                                            write_mpii)

__all__ = ["H36M_ACTIONS", "SceneSample", "SyntheticSpec", "render_person_image", "write_coco",
           "write_h36m", "write_mpii", "coco_detections", "keypoints_triplets"]
