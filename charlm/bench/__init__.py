"""Benchmarks: training and sampling speed, the comparison with PyTorch, and quality at a time budget."""
