"""Read a WAV file and turn it into a fixed-size log-mel spectrogram (float32 ``(1, n_mels, frames)``).

soundfile (libsndfile) reads the file, librosa computes the STFT, the mel filterbank and the dB
scale. The filterbank is built once per ``(sample_rate, n_fft, n_mels)`` and applied to the power
STFT: ``librosa.feature.melspectrogram`` would rebuild it for every file, which dominates the cost on
thousands of short clips. Values are raw dB (``ref=1.0``, floored at ``top_db`` below the clip's
peak); the task builder standardises the store with training statistics only.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile

from fedmosaic.core.errors import AudioReadError

# libsndfile still reads a WAV whose data chunk is cut short, returning the frames that exist; its
# log then reports the declared length as "data : 4768 (should be 2362)". That line is the only
# sign that the file was truncated (a wrong RIFF size alone is common and harmless, so not checked).
_TRUNCATED_DATA = re.compile(r"^data\s*:\s*\d+\s*\(should be \d+\)", re.MULTILINE)


@dataclass(frozen=True)
class MelSettings:
    """How a clip becomes a log-mel spectrogram."""

    sample_rate: int = 8000
    n_fft: int = 512
    hop_length: int = 128
    n_mels: int = 32
    frames: int = 32
    top_db: float = 80.0


def read_wav(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sample_rate`` (channels averaged, resampled if needed).

    Raises :class:`AudioReadError` (one line naming the file) if the file is missing, is not audio
    libsndfile can read, is truncated (its data chunk is shorter than its header declares), holds
    no samples or holds non-finite ones.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioReadError(path, "audio file not found")
    try:
        with soundfile.SoundFile(path) as f:
            log = f.extra_info
            native_rate = f.samplerate
            samples = f.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioReadError(path, f"cannot read audio ({' '.join(str(exc).split())})") from exc
    if _TRUNCATED_DATA.search(log):
        raise AudioReadError(path, "truncated audio file (data chunk shorter than its header declares)")
    if samples.shape[0] == 0:
        raise AudioReadError(path, "empty recording (no samples)")
    if not np.isfinite(samples).all():  # float WAVs can hold NaN/inf, which would poison the mel scale
        raise AudioReadError(path, "non-finite samples (NaN or infinity)")
    mono = samples.mean(axis=1)
    if native_rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=native_rate, target_sr=sample_rate)
    return mono.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=8)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


def log_mel(samples: np.ndarray, settings: MelSettings) -> np.ndarray:
    """Log-mel spectrogram of mono ``samples``, cropped or padded to ``settings.frames`` frames.

    Returns float32 ``(1, n_mels, frames)`` in dB. A longer clip keeps its centre frames (recordings
    such as FSDD's are trimmed around the word). A shorter clip is padded at the end with the
    spectrogram's minimum dB value: that is the clip's own silence level (the ``top_db`` floor, or
    quieter), so padding reads as more silence rather than as a loud or zero-dB event.
    """
    if len(samples) < settings.n_fft:  # a clip shorter than one FFT window: zero samples are silence
        samples = np.pad(samples, (0, settings.n_fft - len(samples)))
    power = np.abs(librosa.stft(samples, n_fft=settings.n_fft, hop_length=settings.hop_length)) ** 2
    mel = _mel_filters(settings.sample_rate, settings.n_fft, settings.n_mels) @ power
    db = librosa.power_to_db(mel, ref=1.0, top_db=settings.top_db).astype(np.float32)
    n = db.shape[1]
    if n >= settings.frames:
        start = (n - settings.frames) // 2
        db = db[:, start : start + settings.frames]
    else:
        db = np.pad(db, ((0, 0), (0, settings.frames - n)), constant_values=db.min())
    return db[None]


def wav_to_log_mel(path: str | Path, settings: MelSettings) -> np.ndarray:
    """:func:`read_wav` then :func:`log_mel`: float32 ``(1, n_mels, frames)``."""
    return log_mel(read_wav(path, settings.sample_rate), settings)
