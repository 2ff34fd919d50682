"""The audio features every loader produces and the official audio encoder reads (one definition for `datasets/`
and `models/`, which do not import each other)."""

# MFCC-39: 13 cepstral coefficients (c0 = log frame energy), their deltas and delta-deltas (docs/protocol.md §5).
AUDIO_FEATURE_DIM = 39
