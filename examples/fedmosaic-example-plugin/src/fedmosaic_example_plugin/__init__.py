"""An example fedmosaic plug-in: FedAvgM (server momentum), a Gaussian-blobs data set, an MLP encoder.

Each module registers one thing when imported; installed, the package's entry points name them, so
fedmosaic finds them without any setting. Importing this package itself registers nothing, so each
registry imports only its own module.
"""
