"""``python -m fedmosaic.cli``: the same command as the ``fedmosaic`` script."""

from fedmosaic.cli import main

main()
