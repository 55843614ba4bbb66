"""Data: loaders (one per source format), the synthetic task, partitioning, task assembly."""
