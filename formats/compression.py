"""Compression of a topic's stored payloads: `gzip` or `zstd` (or `none`)."""

from __future__ import annotations

import gzip

import zstandard

COMPRESSIONS = ("none", "gzip", "zstd")


class UnknownCompression(ValueError):
    """A stored payload names a compression this code does not know."""


def compress(compression: str, data: bytes) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def decompress(compression: str, data: bytes) -> bytes:
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompress(data)
    if compression != "none":
        raise UnknownCompression(f"unknown stored compression '{compression}'")
    return data
