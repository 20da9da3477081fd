/* Reference loops in pure C over the rings of xsk._xsk, for scripts/bench_xsk.py only.
 *
 * Not part of the shipped module: bench_xsk.py compiles this file at start, with its own
 * copy of the xsk sources (cffi_build/xsk*.c: the same code, so the same struct
 * layouts), and hands it the socket of xsk._xsk by address. Only xsk.h's API is used.
 */
#include <errno.h>
#include <time.h>

#include "xsk.h"

int64_t xsk_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The same rx path as the Python API (xsk_rx + xsk_release per batch), minus the
 * interpreter: receive, return to the fill ring, repeat. Busy-polls. */
int64_t xsk_loop_rx(struct xsk_sock *s, uint32_t batch, uint64_t max_frames, int64_t max_ns)
{
    struct xdp_desc descs[256];
    uint64_t total = 0;
    int64_t deadline = xsk_now_ns() + max_ns;
    if (batch == 0 || batch > 256)
        return -EINVAL;
    while (total < max_frames) {
        int got = xsk_rx(s, descs, batch, 0); /* never waits; wakes the fill ring */
        uint32_t n = got > 0 ? (uint32_t)got : 0;
        if (n == 0) {
            if (xsk_now_ns() > deadline)
                break;
            continue;
        }
        xsk_release(s, descs, n);
        total += n;
        if ((total & 0x3ff) < n && xsk_now_ns() > deadline)
            break;
    }
    return (int64_t)total;
}

/* The same tx path as the Python API (complete, allocate, xsk_tx) in C. Frames keep
 * whatever bytes they hold; the caller writes the packet into every frame first. */
int64_t xsk_loop_tx(struct xsk_sock *s, uint32_t batch, uint32_t len, uint64_t max_frames,
                    int64_t max_ns)
{
    struct xdp_desc descs[256];
    uint64_t total = 0;
    int64_t deadline = xsk_now_ns() + max_ns;
    if (batch == 0 || batch > 256)
        return -EINVAL;
    while (total < max_frames && xsk_now_ns() < deadline) {
        xsk_complete(s, 4096);
        if (xsk_frames_alloc_descs(s->frames, descs, batch, 0, len) < 0) {
            xsk_kick(s);
            continue;
        }
        int sent = xsk_tx(s, descs, batch);
        if (sent < 0)
            sent = 0;
        if ((uint32_t)sent < batch)
            xsk_frames_free_descs(s->frames, descs + sent, batch - (uint32_t)sent);
        total += (uint64_t)sent;
    }
    return (int64_t)total;
}
