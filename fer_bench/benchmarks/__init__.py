"""Speed measurements: training against this machine's peak (training_speed) and the frozen-feature
path against a scratch-CNN epoch (frozen_features)."""
