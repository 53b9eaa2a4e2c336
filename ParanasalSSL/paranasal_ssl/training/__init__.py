"""Training machinery shared by every stage: device, checkpoints, augmentation, the loop."""
