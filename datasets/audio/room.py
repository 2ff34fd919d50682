"""Simulated rooms: a reverberant impulse response with a chosen RT60, and the RT60 measured back from one.

The impulse response follows the statistical (Polack) model of a diffuse room: a direct-path impulse, then after
a short gap a late tail of Gaussian noise whose energy decays by 60 dB in RT60 seconds. The decay is exact by
construction, so the RT60 asked for is the RT60 one measures (`measured_rt60`, Schroeder's backward
integration), unlike image-source simulators whose Sabine inversion only approximates it; it costs one FFT
convolution and needs no compiled dependency on the training path. What it leaves out (frequency-dependent
absorption, discrete early reflections) matters less to MFCCs than the smearing of the tail, which it keeps.
"""
import math

import numpy as np
import scipy.signal

DECAY_DB = 60.0  # RT60: the time the energy takes to fall by 60 dB
PRE_DELAY_SECONDS = 0.004  # gap between the direct sound and the first reflections (about 1.4 m of extra path)
TAIL_RT60S = 1.2  # the impulse response lasts this many RT60s (the tail is then 72 dB down)
DIRECT_TO_REVERBERANT_DB = 0.0  # energy of the direct impulse against the tail's: a talker about a metre away
SCHROEDER_FIT_DB = (-5.0, -25.0)  # T20: the decay fitted between these levels, extrapolated to 60 dB


def room_impulse_response(rt60: float, sample_rate: int, rng: np.random.Generator,
                          direct_to_reverberant_db: float = DIRECT_TO_REVERBERANT_DB) -> np.ndarray:
    """A float64 impulse response of a room with reverberation time `rt60` seconds, unit total energy."""
    if not rt60 > 0:
        raise ValueError(f"the reverberation time must be > 0 s, got {rt60}")
    length = max(2, int(math.ceil(TAIL_RT60S * rt60 * sample_rate)))
    times = np.arange(length) / sample_rate
    # energy 10^(-6 t / RT60): -60 dB at RT60; the amplitude is its square root
    envelope = 10.0 ** (-(DECAY_DB / 20.0) * times / rt60)
    tail = rng.standard_normal(length) * envelope
    tail[:int(PRE_DELAY_SECONDS * sample_rate) + 1] = 0.0  # index 0 is the direct path
    direct = math.sqrt(np.sum(tail ** 2) * 10.0 ** (direct_to_reverberant_db / 10.0))
    response = tail
    response[0] = direct
    return response / math.sqrt(np.sum(response ** 2))


def reverberate(samples: np.ndarray, response: np.ndarray) -> np.ndarray:
    """`samples` heard in the room of `response`: the convolution, the room's tail included (the recording goes
    on while the room rings), scaled back to the power of `samples` so that a later SNR means the same."""
    samples = np.asarray(samples, dtype=np.float64)
    wet = scipy.signal.fftconvolve(samples, response)  # len(samples) + len(response) - 1
    power, wet_power = np.mean(samples ** 2), np.mean(wet[:samples.size] ** 2)
    return wet * math.sqrt(power / wet_power) if wet_power > 0 else wet


def measured_rt60(response: np.ndarray, sample_rate: int) -> float:
    """The RT60 of an impulse response by Schroeder's backward integration: the energy decay curve fitted by a
    line between -5 and -25 dB, extrapolated to -60 dB."""
    energy = np.cumsum(np.asarray(response, dtype=np.float64)[::-1] ** 2)[::-1]  # energy still to come
    decay_db = 10.0 * np.log10(energy / energy[0] + np.finfo(np.float64).tiny)
    upper, lower = SCHROEDER_FIT_DB
    fit = (decay_db <= upper) & (decay_db >= lower)
    if fit.sum() < 2:
        raise ValueError("the impulse response decays too little to measure its RT60")
    times = np.flatnonzero(fit) / sample_rate
    slope = np.polyfit(times, decay_db[fit], 1)[0]  # dB per second, negative
    return -DECAY_DB / slope
