"""Transfer: export backbones, COCO data, fine-tuning detectors."""
