"""Philox 4x32-10, word-for-word the stream of tensor/rng.h, in NumPy."""
import numpy as np

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
MASK = np.uint64(0xFFFFFFFF)


def philox4x32(c0, c1, c2, c3, k0, k1):
    c = [np.asarray(x, dtype=np.uint32) for x in (c0, c1, c2, c3)]
    k0, k1 = np.uint32(k0), np.uint32(k1)
    with np.errstate(over="ignore"):
        for _ in range(10):
            p0 = M0 * c[0].astype(np.uint64)
            p1 = M1 * c[2].astype(np.uint64)
            c = [((p1 >> np.uint64(32)).astype(np.uint32) ^ c[1] ^ k0),
                 (p1 & MASK).astype(np.uint32),
                 ((p0 >> np.uint64(32)).astype(np.uint32) ^ c[3] ^ k1),
                 (p0 & MASK).astype(np.uint32)]
            k0 = np.uint32(k0 + W0)
            k1 = np.uint32(k1 + W1)
    return c


def words(seed, offset, n):
    """The first n 32-bit words of the stream at (seed, offset)."""
    w = np.arange(n, dtype=np.uint64)
    block = np.uint64(offset) + w // np.uint64(4)
    lane = (w % np.uint64(4)).astype(np.int64)
    c = philox4x32((block & MASK).astype(np.uint32), (block >> np.uint64(32)).astype(np.uint32),
                   np.zeros(n, np.uint32), np.zeros(n, np.uint32),
                   seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)
    return np.choose(lane, c)


def uniform(seed, offset, n):
    """U[0, 1) with 24 bits, as philox_uniform."""
    return (words(seed, offset, n) >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)
