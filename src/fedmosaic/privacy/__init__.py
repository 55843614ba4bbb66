"""Client-level differential privacy for what clients upload: clipping, Gaussian noise, RDP accounting."""

from fedmosaic.privacy.accounting import federation_epsilon, local_epsilon, privacy_markdown, privacy_summary
from fedmosaic.privacy.dp import PrivacyConfig, PrivateClient, clip_upload, private_client, privatise

__all__ = [
    "PrivacyConfig",
    "PrivateClient",
    "clip_upload",
    "federation_epsilon",
    "local_epsilon",
    "privacy_markdown",
    "privacy_summary",
    "private_client",
    "privatise",
]
