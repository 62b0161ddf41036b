"""Latency, throughput, memory and accuracy per exported format (arrives with the benchmark issue)."""
