"""The write side: aggregates, command types and the application service."""

from __future__ import annotations
