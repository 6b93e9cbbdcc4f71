"""Byte-level helpers for tests that build model files by hand: members in and out of a zip, the metadata."""

import io as _bytesio
import json
import zipfile

import numpy as np


def _npy(array, allow_pickle=False):
    buf = _bytesio.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _members(data: bytes) -> dict:
    with zipfile.ZipFile(_bytesio.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(members: dict) -> bytes:
    """A zip of ``name -> bytes`` written as np.savez writes it (stored, fresh CRCs)."""
    buf = _bytesio.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _meta(data: bytes) -> dict:
    raw = np.load(_bytesio.BytesIO(_members(data)["__meta__.npy"]), allow_pickle=False)
    return json.loads(raw.tobytes().decode())


def _with_meta(data: bytes, meta) -> bytes:
    members = _members(data)
    members["__meta__.npy"] = _npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    return _zip(members)
