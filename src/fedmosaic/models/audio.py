"""Audio encoder over log-mel spectrograms ``(B, 1, n_mels, frames)``."""

from __future__ import annotations

from fedmosaic.models.image import SmallCNN


class MelCNN(SmallCNN):
    """The same network as :class:`~fedmosaic.models.image.SmallCNN`, used as is.

    A log-mel spectrogram is a one-channel image (mel bands x frames): SmallCNN's three conv +
    GroupNorm blocks with global pooling fit it unchanged, for any ``n_mels`` and ``frames`` >= 4.
    This subclass adds nothing; it only gives the audio encoder its own name (dispatch, reprs).
    """
