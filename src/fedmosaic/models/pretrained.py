"""Pretrained text models, tokenizers and configs from a hub id or a local folder, offline-aware.

The text encoders (:mod:`fedmosaic.models.text`), the frozen-encoder cache
(:mod:`fedmosaic.models.frozen`) and the tokenizers (:mod:`fedmosaic.data.text`) all load through
:func:`load_pretrained`, so a missing folder or an uncached hub id is one :class:`ConfigError` naming
``model.text_encoder``, whichever part asked first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from fedmosaic.core.errors import ConfigError

T = TypeVar("T")


def resolve_source(source: str | Path) -> str:
    """A hub id unchanged; an existing local folder (``~`` expanded) as its absolute path."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else str(source)


def _looks_like_path(text: str) -> bool:
    # A hub id is "name" or "org/name"; anything else the user typed is meant as a folder.
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No "Loading weights" bar from transformers for a local load that takes a fraction of a second."""
    from transformers.utils import logging as hf_logging  # lazy: what calls this has imported it

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_pretrained(factory: Callable[[str], T], source: str | Path, what: str) -> T:
    """``factory(source)`` (a ``from_pretrained``) with not-found/offline errors as one :class:`ConfigError`.

    The same call takes a hub id (downloaded, or from the local hub cache when offline) and a local
    model folder. ``what`` names the part being loaded in the message ("tokenizer", "model").
    """
    text = str(source)
    try:
        with _quiet_loading():
            return factory(resolve_source(source))
    except (OSError, ValueError) as exc:  # transformers reports missing folders, ids and files as OSError
        if _looks_like_path(text) and not Path(text).expanduser().exists():
            reason = "no such folder"
        else:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = lines[0] if lines else type(exc).__name__
        raise ConfigError(
            f"model.text_encoder: cannot load the {what} from {text!r} ({reason}); give a local model "
            "folder or a hub id that is cached (a download needs internet access)"
        ) from None
