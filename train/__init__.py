"""Workstation side: fine-tune ResNet-50 on NEU (``edge-train``). Imports edge_runtime, never the reverse."""
