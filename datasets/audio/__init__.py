"""The audio module: a spoken expression from a file to the `[39, L]` features the model reads.

    features.py   the official MFCC-39 (exact) and the librosa alternative; `compute_features` by type
    io.py         decoding any recording, resampling, reading/writing `.npy` features and their rate record
    noise.py      white, pink and babble noise at an exact signal-to-noise ratio
    room.py       simulated rooms with an exact RT60, and RT60 measured back
    perturb.py    speed, pitch, vocal-tract length, gain, band limit, silence; one fixed `AudioCondition`
                  (evaluation) and the random `AudioAugment` (training, seeded by sample and epoch)
    loader.py     `AudioLoader` (read -> resample -> change -> featurise -> cache -> check) and its builder

Where to plug in: a new feature type is a function in `features.FEATURE_FUNCTIONS` (the audio encoder that reads
it declares its `feature_dim`); a new change to recordings is a step in `perturb.py`, used by `AudioCondition`
(with its option in `build_condition`) and/or `AudioAugment` (with its range in `AugmentRanges`).
"""
from datasets.audio.features import (CEPSTRAL_LIFTER, DELTA_THETA, EPS, FEATURE_DIM, FEATURE_TYPES, FRAME_SECONDS,
                                     INT16_SCALE, NFFT, NUM_CEPSTRA, NUM_FILTERS, PRE_EMPHASIS, STEP_SECONDS,
                                     compute_features, frame_geometry, hz_to_mel, librosa_mfcc39, mel_filterbank,
                                     mel_to_hz, mfcc39, num_feature_frames)
from datasets.audio.io import (AUDIO_EXTENSIONS, FEATURE_INFO_NAME, FEATURE_SUFFIX, AudioDecodeError, AudioWarning,
                               check_recording, default_file_mode, extract_features, feature_sample_rate,
                               features_from_samples, is_recording, load_audio, read_feature_info, resample,
                               save_features, write_feature_info)
from datasets.audio.loader import AudioLoader, audio_source, build_audio_loader, decode

__all__ = ["AUDIO_EXTENSIONS", "CEPSTRAL_LIFTER", "DELTA_THETA", "EPS", "FEATURE_DIM", "FEATURE_INFO_NAME",
           "FEATURE_SUFFIX", "FEATURE_TYPES", "FRAME_SECONDS", "INT16_SCALE", "NFFT", "NUM_CEPSTRA", "NUM_FILTERS",
           "PRE_EMPHASIS", "STEP_SECONDS", "AudioDecodeError", "AudioLoader", "AudioWarning", "audio_source",
           "build_audio_loader", "check_recording", "compute_features", "decode", "default_file_mode",
           "extract_features", "feature_sample_rate", "features_from_samples", "frame_geometry", "hz_to_mel",
           "is_recording", "librosa_mfcc39", "load_audio", "mel_filterbank", "mel_to_hz", "mfcc39",
           "num_feature_frames", "read_feature_info", "resample", "save_features", "write_feature_info"]
