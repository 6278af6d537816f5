"""Run directories shared by every task: finding runs, locks, metrics logs, data fingerprints, safetensors headers."""
