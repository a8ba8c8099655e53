"""A double-array trie in the darts-clone layout, the lookup structure inside
tensorflow-text's FastBertNormalizer model (see `kbert.text.normalizer`).

tf-text builds its tries in C++ and exposes no builder for custom contents, so this is a
small builder of our own for the same unit format, read by tf-text's
`DartsCloneTrieWrapper`:

- a node at position `p` with unit `u` has its children at `p ^ offset(u) ^ label`, where
  `offset(u) = (u >> 10) << ((u & 0x200) >> 6)`; bits 0-7 of a child's unit hold its label
  (the byte that leads to it), bit 8 says the node ends a key;
- the value of a key sits in the node's label-0 slot (`p ^ offset(u)`) as
  `value | 0x80000000`; the top bit makes its label never match a byte.

Lookups never check bounds. They stay inside the array because every node's children
share one 256-aligned block (`base ^ label` only changes the low 8 bits of `base`) and the
array is a whole number of blocks. Two nodes share a base only when their subtries are
identical (as darts-clone does, it merges equal subtrees, which keeps tables where many
keys map to the same value small); otherwise a step from one node could land on another's
child with the same label and match.
"""

from __future__ import annotations

import collections
from typing import Mapping

import numpy as np

_LEAF_BIT = 0x80000000
_HAS_LEAF_BIT = 0x100
_MAX_DIRECT_OFFSET = 1 << 21  # offsets below this are stored as they are
_WIDE = 16  # nodes with more children than this get a fresh block


def build_trie(keys: Mapping[bytes, int]) -> np.ndarray:
    """Builds the trie array for `keys` (non-empty byte strings -> values in [0, 2**31)).

    Returns:
        uint32 [n * 256]: the units; position 0 is the root.
    """
    root: dict = {}
    for key, value in keys.items():
        if not key or b"\0" in key:
            raise ValueError(f"trie keys must be non-empty and free of NUL bytes: {key!r}")
        if not 0 <= value < _LEAF_BIT:
            raise ValueError(f"trie values must be in [0, 2**31): {value}")
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value  # None: a key ends here (its value goes under label 0)
    return _Builder(root).units


class _Builder:
    """Places the nodes breadth first, each at the first base where its slots are free."""

    def __init__(self, root: dict):
        self._shapes: dict[tuple, int] = {}
        self._node_shape: dict[int, int] = {}
        self._number(root)
        self._units: list[int] = [0] * 256
        self._used = bytearray(256)
        self._used[0] = 1  # the root
        self._end = 1  # one past the last used position
        self._first_free = 1
        self._wide_block = 0  # blocks before this have no room for a wide node
        self._bases: set[int] = set()
        self._shape_base: dict[int, int] = {}

        queue = collections.deque([(root, 0)])
        while queue:
            node, position = queue.popleft()
            queue.extend(self._place(node, position))
        size = (self._end + 255) // 256 * 256
        self.units = np.asarray(self._units[:size], dtype=np.uint32)

    def _number(self, node: dict) -> int:
        """Numbers the distinct subtrie shapes, so that equal subtries can share a base."""
        shape = tuple(sorted((-1, child) if label is None else (label, self._number(child))
                             for label, child in node.items()))
        number = self._shapes.setdefault(shape, len(self._shapes))
        self._node_shape[id(node)] = number
        return number

    def _place(self, node: dict, position: int) -> list:
        """Writes the unit at `position`; returns the children still to place."""
        shape = self._node_shape[id(node)]
        known = shape in self._shape_base
        base = self._shape_base[shape] if known else self._find_base(
            sorted(0 if label is None else label for label in node))
        offset = position ^ base
        if offset >= _MAX_DIRECT_OFFSET:
            raise ValueError("trie too large for the darts-clone offset encoding")
        self._units[position] |= (offset << 10) | (_HAS_LEAF_BIT if None in node else 0)
        if known:
            return []
        self._shape_base[shape] = base
        self._bases.add(base)
        children = []
        for label, child in node.items():
            slot = base if label is None else base ^ label
            self._use(slot)
            if label is None:
                self._units[slot] = child | _LEAF_BIT
            else:
                self._units[slot] = label
                children.append((child, slot))
        return children

    def _find_base(self, labels: list[int]) -> int:
        used = self._used
        if len(labels) > _WIDE:
            return self._find_wide_base(labels)
        self._first_free = used.find(0, self._first_free)
        candidate = self._first_free
        while True:
            base = candidate ^ labels[0]
            self._grow((base | 0xFF) + 1)
            if base not in self._bases and not any(used[base ^ label] for label in labels):
                return base
            candidate = used.find(0, candidate + 1)

    def _find_wide_base(self, labels: list[int]) -> int:
        # Probing slot by slot is slow for a node with many children (each try costs up
        # to len(labels) probes): test a whole block at once instead, every base in it.
        slots = np.arange(256)[:, None] ^ np.asarray(labels)[None, :]
        block = self._wide_block
        while True:
            start = block * 256
            self._grow(start + 256)
            free = np.frombuffer(self._used, np.uint8, 256, start) == 0
            if free.sum() >= len(labels):
                for j in np.flatnonzero(free[slots].all(axis=1)):
                    if start + int(j) not in self._bases:
                        return start + int(j)
            elif block == self._wide_block:
                # Skip it from now on (a narrower wide node might still have fitted:
                # a little space for a lot of time).
                self._wide_block += 1
            block += 1

    def _use(self, slot: int) -> None:
        self._used[slot] = 1
        self._end = max(self._end, slot + 1)

    def _grow(self, size: int) -> None:
        # Keep a free block beyond `size` so that `find` always meets a free slot.
        if size + 256 > len(self._units):
            extra = max(size + 256 - len(self._units), len(self._units)) // 256 * 256 + 256
            self._units.extend([0] * extra)
            self._used.extend(bytes(extra))


def lookup(trie: np.ndarray, key: bytes) -> int | None:
    """The value stored for `key`, or None (the walk of tf-text's C++ reader)."""
    def offset(unit: int) -> int:
        return (unit >> 10) << ((unit & 0x200) >> 6)

    position, unit = 0, int(trie[0])
    for byte in key:
        position ^= offset(unit) ^ byte
        unit = int(trie[position])
        if unit & 0x800000FF != byte:
            return None
    if not unit & _HAS_LEAF_BIT:
        return None
    return int(trie[position ^ offset(unit)]) & 0x7FFFFFFF
