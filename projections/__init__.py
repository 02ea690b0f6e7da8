"""Read models: tables, the projector that follows the store, and queries the API serves."""

from __future__ import annotations
