"""Sequence classification (one label per text) and tagging (one label per token) with
(bi)directional recurrent encoders.

Modules, one job each: ``bidir`` (the encoder over variable-length batches), ``model``
(embedding, encoder, head), ``ngrams`` (hashed n-gram input embeddings), ``ensemble`` (K models
trained side by side, probabilities averaged), ``heads`` (pooling and losses), ``data`` (TSV, CoNLL and the
restore-spaces task), ``batching`` (vocabularies, encoding, length buckets), ``metrics``,
``store`` (checkpoints), ``runs`` (run directories), ``train`` (the loop) and ``events`` (what
it reports), ``predict`` (using a trained model). Importing this package is light; Numba loads
with the first forward pass.
"""
