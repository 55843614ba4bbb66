"""Core types shared by every layer: modalities, clients, messages, tasks, the Algorithm protocol."""
