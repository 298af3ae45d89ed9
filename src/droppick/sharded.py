"""Selection over sharded state: ``select_hardest``'s answer when no rank holds all N losses.

Rank r of W owns the contiguous sample indices ``[bounds[r], bounds[r + 1])`` (``slice_bounds``)
and holds their losses only. A drop must keep exactly the samples ``selection.select_hardest``
keeps over all N: the k highest losses, among equal losses the lower index. Without gathering the
losses, the k-th largest is found by a radix selection over order-preserving 32-bit keys
(``float_keys``). Three rounds (``ROUNDS``) each histogram the candidates' next 11, 11 and 10 bits;
the histograms are summed over the ranks and every rank narrows its candidates to the bin that
holds the k-th largest. After the last round every rank knows the threshold key T and how many
keys equal to T the rule keeps; the slices being contiguous and in rank order, "the lowest indices
first" is a prefix over the ranks' counts of T. Each round moves one histogram per rank, the ties a
count per rank: 5,120 + W counts (8 bytes each) per selection, whatever N.

Every function takes the slices of the ranks this process holds, as lists, and a ``Ranks``: which
ranks those are and the one collective, the sum over all ranks of int64 arrays. Under
torch.distributed a process holds one rank (``distributed.all_reduce_counts``); the single-process
simulation of the tests and of ``bench/sharded_selection.py`` holds all W and sums their arrays
(``simulated``). ``sharded_rules`` runs the built-in rules this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

Reduce = Callable[[Sequence[np.ndarray]], np.ndarray]

ROUNDS = ((21, 11), (10, 11), (0, 10))  # (shift, bits) of each round's digit: 32 bits in all
CHUNK = 1 << 20  # whole-slice passes go by chunks: transient buffers of a few MB, not of N/W
NEG_INF_KEY = 0x007FFFFF  # float_keys(-inf); NaN gets it too. Key 0 (below it) marks a non-member.
POS_INF_KEY = 0xFF800000  # float_keys(+inf)


def slice_bounds(num_samples: int, world: int) -> list[int]:
    """The W + 1 boundaries of the ranks' slices: rank r owns ``[r * N // W, (r + 1) * N // W)``."""
    return [r * num_samples // world for r in range(world + 1)]


@dataclass(frozen=True)
class Ranks:
    """The ranks whose slices a process holds, ``first`` onwards, of ``world``; ``reduce`` sums an
    int64 array over all ranks, given the arrays of the ranks held."""

    reduce: Reduce
    first: int
    world: int

    def per_rank(self, local: Sequence[int]) -> np.ndarray:
        """Every rank's value, given those of the ranks held (one all-reduce of W counts)."""
        counts = np.zeros((len(local), self.world), dtype=np.int64)
        for i, value in enumerate(local):
            counts[i, self.first + i] = value
        return self.reduce(list(counts))


def slice_mask(subset: Optional[torch.Tensor], lo: int, hi: int) -> np.ndarray:
    """The part ``lo .. hi - 1`` of a subset over all N (None: all data; a bool mask; sorted indices)."""
    if subset is None:
        return np.ones(hi - lo, dtype=bool)
    if subset.dtype == torch.bool:
        return subset[lo:hi].cpu().numpy().copy()
    ids = subset.cpu().numpy()
    mask = np.zeros(hi - lo, dtype=bool)
    mask[ids[(ids >= lo) & (ids < hi)] - lo] = True
    return mask


def simulated(world: int) -> Ranks:
    """All ``world`` ranks in this process: the collective is the sum of their arrays."""
    return Ranks(lambda arrays: np.sum(np.stack(arrays), axis=0), 0, world)


def float_keys(values: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """uint32 keys in the order of the float32 ``values``: key(a) < key(b) iff a < b.

    The sign bit is flipped for positives and every bit for negatives; -0.0 gets +0.0's key (they
    are equal losses), NaN gets -inf's (the engine ranks a non-finite loss last). A non-member
    (``members`` False) gets 0, below every loss, so it never reaches the threshold.
    """
    keys = np.empty(values.size, dtype=np.uint32)
    for start in range(0, values.size, CHUNK):
        bits = values[start:start + CHUNK].view(np.int32)
        key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(np.uint32) ^ np.uint32(0x80000000)
        key[key == 0x7FFFFFFF] = 0x80000000  # -0.0 -> +0.0
        key[(key > POS_INF_KEY) | (key < NEG_INF_KEY)] = NEG_INF_KEY  # NaN -> -inf
        if members is not None:
            key[~members[start:start + CHUNK]] = 0
        keys[start:start + CHUNK] = key
    return keys


def _digits(keys: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return (keys >> np.uint32(shift)) & np.uint32((1 << bits) - 1)


def _histogram(keys: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """The counts of each ``bits``-bit digit at ``shift`` (the keys share the bits above it)."""
    counts = np.zeros(1 << bits, dtype=np.int64)
    for start in range(0, keys.size, CHUNK):
        counts += np.bincount(_digits(keys[start:start + CHUNK], shift, bits), minlength=1 << bits)
    return counts


def _narrow(keys: np.ndarray, shift: int, bits: int, digit: int) -> np.ndarray:
    """The keys whose digit at ``shift`` is ``digit``."""
    return np.concatenate([np.zeros(0, dtype=np.uint32)] + [
        c[_digits(c, shift, bits) == digit] for c in (keys[s:s + CHUNK] for s in range(0, keys.size, CHUNK))])


def select_largest(keys: Sequence[np.ndarray], k: int, ranks: Ranks) -> list[np.ndarray]:
    """Bool masks over the held slices ``keys`` of the ``k`` largest keys of all ranks; among
    equal keys the lowest rank, then position.

    Every rank calls it with the same ``k``, 1 <= k <= the number of members: keys of at least
    2^21 (``float_keys`` gives a non-member 0 and a member at least ``NEG_INF_KEY``). ``keys`` is
    read three times (to count, to narrow, to mask): a simulation may make its slices on demand.
    """
    candidates = keys  # then, after each round, the keys that match the threshold's digits so far
    threshold, need = 0, k  # need: how many of the candidates are kept
    for shift, bits in ROUNDS:
        counts = ranks.reduce([_histogram(c, shift, bits) for c in candidates])
        if shift == ROUNDS[0][0]:
            counts[0] = 0  # keys below 2^21: float_keys makes none but 0, a non-member's
        at_least = np.cumsum(counts[::-1])  # at_least[j]: keys whose digit is >= (2^bits - 1 - j)
        j = int(np.searchsorted(at_least, need))  # the first digit from the top that reaches need
        if j == counts.size:
            raise ValueError(f"k = {k} exceeds the {int(at_least[-1])} members of the selection")
        digit = counts.size - 1 - j
        need -= int(at_least[j] - counts[digit])  # those above the digit are all kept
        threshold |= digit << shift
        candidates = [_narrow(c, shift, bits, digit) for c in candidates]
    # the candidates are now the keys equal to the threshold: the first `need` are kept, in rank order
    ties = ranks.per_rank([c.size for c in candidates])
    masks = []
    for i, key in enumerate(keys):
        before = int(ties[:ranks.first + i].sum())
        kept = min(max(need - before, 0), candidates[i].size)
        mask = key > threshold
        if kept:
            mask[np.flatnonzero(key == threshold)[:kept]] = True
        masks.append(mask)
    return masks


def select_hardest_sharded(values: Sequence[np.ndarray], members: Sequence[np.ndarray], k: int,
                           ranks: Ranks) -> list[np.ndarray]:
    """``select_hardest`` over sharded float32 ``values``: masks of the ``k`` members with the
    highest values, ties to the lower index; all False for k = 0 (every rank must agree on k)."""
    if k == 0:
        return [np.zeros(v.size, dtype=bool) for v in values]
    keys = [float_keys(v, m) for v, m in zip(values, members)]
    return select_largest(keys, k, ranks)


def draw_members(eligible: Sequence[np.ndarray], count: int, generator: torch.Generator,
                 ranks: Ranks) -> list[np.ndarray]:
    """Masks of ``count`` of the eligible samples of all ranks drawn as the unsharded rules draw
    them: ``torch.randperm(total, generator)[:count]`` over the eligible samples in index order.

    Every rank draws the same permutation of all ``total`` eligible samples (8 bytes each,
    transient: the one O(N) step of a random choice) and keeps the picks that fall on its slice.
    """
    owned = ranks.per_rank([np.count_nonzero(e) for e in eligible])
    chosen = torch.randperm(int(owned.sum()), generator=generator)[:count].numpy()
    masks = []
    for i, e in enumerate(eligible):
        start = int(owned[:ranks.first + i].sum())
        mine = chosen[(chosen >= start) & (chosen < start + owned[ranks.first + i])] - start
        mask = np.zeros(e.size, dtype=bool)
        mask[np.flatnonzero(e)[mine]] = True
        masks.append(mask)
    return masks


def pack(mask: np.ndarray) -> torch.Tensor:
    """A bool mask as a bitmap: uint8, 1 bit per sample."""
    return torch.from_numpy(np.packbits(mask, bitorder="little"))


def subset_of(bitmaps: Sequence[torch.Tensor], bounds: Sequence[int]) -> torch.Tensor:
    """The sorted indices of a subset given as every rank's bitmap of its slice."""
    return torch.from_numpy(np.concatenate([np.zeros(0, dtype=np.int64)] + [
        np.flatnonzero(unpack(b, bounds[r + 1] - bounds[r])) + bounds[r] for r, b in enumerate(bitmaps)]))


def shard_of(bitmaps: Sequence[torch.Tensor], bounds: Sequence[int], n: int, generator: torch.Generator, rank: int,
             world: int) -> np.ndarray:
    """``sampler.shard_order``'s shard for ``rank`` of the subset of ``n`` members given as every
    rank's bitmap: the same permutation, padded by wrapping around as it pads, without ever
    holding the subset's indices (the permutation, 8 bytes a member, is the one O(n) array)."""
    perm = torch.randperm(n, generator=generator).numpy()
    return members_at(bitmaps, bounds, perm[np.arange(rank, -(-n // world) * world, world) % n])


def members_at(bitmaps: Sequence[torch.Tensor], bounds: Sequence[int], ordinals: np.ndarray) -> np.ndarray:
    """The sample indices of the subset's members number ``ordinals`` (0-based, in index order),
    given every rank's bitmap; one slice's members at a time (8 bytes each), never the whole subset."""
    sizes = [int(np.count_nonzero(unpack(b, bounds[r + 1] - bounds[r]))) for r, b in enumerate(bitmaps)]
    starts = np.cumsum([0] + sizes)
    owner = (np.searchsorted(starts, ordinals, side="right") - 1).astype(np.int16 if len(sizes) < 1 << 15 else np.int32)
    by_owner = np.argsort(owner, kind="stable")  # a radix sort for 16-bit keys: O(n)
    edges = np.searchsorted(owner[by_owner], np.arange(len(sizes) + 1))  # each rank's run of by_owner
    out = np.empty(ordinals.size, dtype=np.int64)
    for r in range(len(sizes)):
        at = by_owner[edges[r]:edges[r + 1]]
        if at.size:
            out[at] = np.flatnonzero(unpack(bitmaps[r], bounds[r + 1] - bounds[r]))[ordinals[at] - starts[r]] + bounds[r]
    return out


def find_sorted(samples: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of ``ids`` in the sorted ``samples``, whether each is there). The ids are searched
    in sorted order: the searches' memory accesses then stay close, several times faster."""
    ids = ids.astype(samples.dtype)  # sample indices: the same values in either dtype
    positions = np.empty(ids.size, dtype=np.int64)
    by_id = np.argsort(ids)
    positions[by_id] = np.searchsorted(samples, ids[by_id])
    inside = positions < samples.size
    inside[inside] = samples[positions[inside]] == ids[inside]
    return positions, inside


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)``: numpy 2's hashes integers, 50 times slower here than this sort at 16M."""
    ordered = np.sort(values)
    first = np.ones(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def unpack(bitmap: torch.Tensor, length: int) -> np.ndarray:
    """The bool mask of ``length`` samples that ``pack`` made ``bitmap`` of."""
    return np.unpackbits(bitmap.numpy(), count=length, bitorder="little").view(bool)
