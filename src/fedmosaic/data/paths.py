"""Keep every file a loader reads inside its data root.

A loader reads files its layout fixes (``RawData/labels.txt``) and files its data *names* (a
``folder`` samples file's ``image`` column, a COCO ``file_name``). Either can lead out of the data:
``../``, an absolute path, a symlink. A file outside is not the site's data -- it may be another
site's, the server's test set, or anything the process can read -- and once decoded it trains a
model with no trace of where it came from. So every loader applies one rule before it opens a file:

    resolve the path (``..`` and symlinks followed, as the OS would when opening it), then require
    the result to lie under the resolved root; read the resolved path.

The check comes before any existence test, so a row cannot probe which files exist outside the root.
The root is ``task.data_dir`` or a stricter folder inside it (a ``folder`` client's own folder, a
COCO split's image folder); each loader's module doc says which.
"""

from __future__ import annotations

from pathlib import Path

from fedmosaic.core.errors import PathEscapeError
from fedmosaic.data.registry import LoadContext


def data_root(ctx: LoadContext, dataset: str) -> Path:
    """``task.data_dir`` (which must be a folder), resolved: the root every read is checked against.

    Resolving the root itself means a data folder reached through a symlink is still one tree.
    """
    return ctx.require_dir(dataset).resolve()


def confined(path: Path, root: Path, root_name: str = "the data root") -> Path:
    """``path`` resolved, if it lies under ``root`` (also resolved); :class:`PathEscapeError` otherwise.

    ``root_name`` says what the root is in the message ("its client folder"), e.g.
    ``'../x.png' resolves to '/srv/x.png', outside its client folder /data/client_1``.
    """
    try:
        resolved = path.resolve()
        base = root.resolve()
    # a symlink loop (RuntimeError before Python 3.13, OSError after), a NUL byte (ValueError)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PathEscapeError(path, f"cannot resolve the path ({' '.join(str(exc).split())})") from None
    if not resolved.is_relative_to(base):
        raise PathEscapeError(path, f"resolves to {str(resolved)!r}, outside {root_name} {base}")
    return resolved
