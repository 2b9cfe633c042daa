"""Test-time LoRA fine-tuning, model loading, generation and bits-per-byte evaluation."""

from __future__ import annotations

__all__: list[str] = []
