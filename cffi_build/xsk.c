/* AF_XDP socket, rings and UMEM frame table (see xsk.h for the contract).
 *
 * Frame ownership is tracked per frame in one byte, so that no frame is ever handed
 * out twice and a closed socket returns exactly the frames it had given the kernel:
 *
 *   FRAME_FREE (0)      on the free stack
 *   1..254              in the kernel on behalf of the socket with that owner tag
 *                       (fill ring, rx ring not yet read, tx ring, completion ring)
 *   FRAME_APP (255)     held by the application (an rx batch, a tx allocation)
 *
 * Every transition is a compare-and-swap from the expected state, so a double release,
 * a send of a frame the application does not hold, or a stray address is refused and
 * counted instead of corrupting the rings.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "xsk_internal.h"

static int kick_here(struct xsk_sock *s);

#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#define FRAME_FREE 0u
#define FRAME_APP 255u

const int XSK_MAP_HUGETLB = MAP_HUGETLB;
/* XDP_PACKET_HEADROOM (include/linux/bpf.h, kernel side): the kernel places received
 * data this far into a frame, after the UMEM headroom. */
const uint32_t XSK_PACKET_HEADROOM = 256;

struct xsk_frames {
    pthread_mutex_t lock;  /* guards the free stack; states change by CAS */
    uint32_t count;
    uint32_t shift;        /* log2(frame_size) */
    uint32_t top;          /* number of entries on the stack */
    uint8_t *state;
    uint32_t *stack;       /* frame indices */
};

/* --- frame table ------------------------------------------------------------------ */

struct xsk_frames *xsk_frames_new(uint32_t count, uint32_t frame_size)
{
    if (count == 0 || frame_size == 0 || (frame_size & (frame_size - 1)) != 0)
        return NULL;
    struct xsk_frames *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->state = calloc(count, 1);
    f->stack = malloc((size_t)count * sizeof(uint32_t));
    if (!f->state || !f->stack || pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f->state);
        free(f->stack);
        free(f);
        return NULL;
    }
    f->count = count;
    f->shift = (uint32_t)__builtin_ctz(frame_size);
    /* Lowest frames on top: a fresh UMEM hands out frames 0, 1, 2, ... */
    for (uint32_t i = 0; i < count; i++)
        f->stack[i] = count - 1 - i;
    f->top = count;
    return f;
}

void xsk_frames_destroy(struct xsk_frames *f)
{
    if (!f)
        return;
    pthread_mutex_destroy(&f->lock);
    free(f->state);
    free(f->stack);
    free(f);
}

uint32_t xsk_frames_free_count(struct xsk_frames *f)
{
    pthread_mutex_lock(&f->lock);
    uint32_t n = f->top;
    pthread_mutex_unlock(&f->lock);
    return n;
}

uint32_t xsk_frames_owned_by(struct xsk_frames *f, uint32_t owner)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < f->count; i++)
        n += __atomic_load_n(&f->state[i], __ATOMIC_RELAXED) == owner;
    return n;
}

static inline int frame_index(const struct xsk_frames *f, uint64_t addr, uint32_t *idx)
{
    uint64_t i = addr >> f->shift;
    if (i >= f->count)
        return 0;
    *idx = (uint32_t)i;
    return 1;
}

static inline int frame_cas(struct xsk_frames *f, uint32_t idx, uint8_t from, uint8_t to)
{
    uint8_t expected = from;
    return __atomic_compare_exchange_n(&f->state[idx], &expected, to, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_RELAXED);
}

/* Pop up to n frames for `owner` (caller holds the lock). */
static uint32_t frames_pop_locked(struct xsk_frames *f, uint32_t *out, uint32_t n, uint8_t owner)
{
    if (n > f->top)
        n = f->top;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = f->stack[--f->top];
        __atomic_store_n(&f->state[idx], owner, __ATOMIC_RELEASE);
        out[i] = idx;
    }
    return n;
}

int xsk_frames_alloc(struct xsk_frames *f, uint64_t *out, uint32_t n)
{
    uint32_t idx[256];
    uint32_t done = 0;
    pthread_mutex_lock(&f->lock);
    if (f->top < n) {
        pthread_mutex_unlock(&f->lock);
        return -ENOBUFS;  /* all or nothing: the caller asked for a whole batch */
    }
    while (done < n) {
        uint32_t chunk = n - done > 256 ? 256 : n - done;
        frames_pop_locked(f, idx, chunk, FRAME_APP);
        for (uint32_t i = 0; i < chunk; i++)
            out[done + i] = (uint64_t)idx[i] << f->shift;
        done += chunk;
    }
    pthread_mutex_unlock(&f->lock);
    return (int)n;
}

int xsk_frames_alloc_descs(struct xsk_frames *f, struct xdp_desc *out, uint32_t n,
                           uint64_t offset, uint32_t len)
{
    uint32_t idx[256];
    uint32_t done = 0;
    if (offset + len > (1ull << f->shift))
        return -EINVAL;
    pthread_mutex_lock(&f->lock);
    if (f->top < n) {
        pthread_mutex_unlock(&f->lock);
        return -ENOBUFS;
    }
    while (done < n) {
        uint32_t chunk = n - done > 256 ? 256 : n - done;
        frames_pop_locked(f, idx, chunk, FRAME_APP);
        for (uint32_t i = 0; i < chunk; i++) {
            out[done + i].addr = ((uint64_t)idx[i] << f->shift) + offset;
            out[done + i].len = len;
            out[done + i].options = 0;
        }
        done += chunk;
    }
    pthread_mutex_unlock(&f->lock);
    return (int)n;
}

/* Return application-held frames to the free stack; refused addresses are counted in
 * the (negative) result's absence: the result is the number accepted. */
int xsk_frames_free(struct xsk_frames *f, const uint64_t *addrs, uint32_t n)
{
    int accepted = 0;
    pthread_mutex_lock(&f->lock);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx;
        if (frame_index(f, addrs[i], &idx) && frame_cas(f, idx, FRAME_APP, FRAME_FREE)) {
            f->stack[f->top++] = idx;
            accepted++;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return accepted;
}

int xsk_frames_free_descs(struct xsk_frames *f, const struct xdp_desc *descs, uint32_t n)
{
    int accepted = 0;
    pthread_mutex_lock(&f->lock);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx;
        if (frame_index(f, descs[i].addr, &idx) && frame_cas(f, idx, FRAME_APP, FRAME_FREE)) {
            f->stack[f->top++] = idx;
            accepted++;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return accepted;
}

/* After a socket is closed the kernel holds none of its frames: take them all back. */
int xsk_frames_reclaim(struct xsk_frames *f, uint32_t owner)
{
    int n = 0;
    if (owner == FRAME_FREE || owner >= FRAME_APP)
        return -EINVAL;
    pthread_mutex_lock(&f->lock);
    for (uint32_t i = 0; i < f->count; i++) {
        if (frame_cas(f, i, (uint8_t)owner, FRAME_FREE)) {
            f->stack[f->top++] = i;
            n++;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return n;
}

int xsk_frames_state(struct xsk_frames *f, uint64_t addr)
{
    uint32_t idx;
    if (!frame_index(f, addr, &idx))
        return -EINVAL;
    return __atomic_load_n(&f->state[idx], __ATOMIC_ACQUIRE);
}

/* --- socket lifecycle --------------------------------------------------------------- */

static void ring_unmap(struct xsk_ring *r)
{
    if (r->map && r->map != MAP_FAILED)
        munmap(r->map, r->map_len);
    memset(r, 0, sizeof(*r));
}

static int ring_map(int fd, struct xsk_ring *r, const struct xdp_ring_offset *off,
                    uint32_t size, size_t entry, uint64_t pgoff, int producer_side)
{
    size_t len = off->desc + (size_t)size * entry;
    void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                     (off_t)pgoff);
    if (map == MAP_FAILED)
        return -errno;
    r->map = map;
    r->map_len = len;
    r->producer = (uint32_t *)((char *)map + off->producer);
    r->consumer = (uint32_t *)((char *)map + off->consumer);
    r->flags = (uint32_t *)((char *)map + off->flags);
    r->ring = (char *)map + off->desc;
    r->mask = size - 1;
    r->size = size;
    r->cached_prod = ring_load_acquire(r->producer);
    r->cached_cons = ring_load_acquire(r->consumer);
    if (producer_side)
        r->cached_cons += size;  /* see prod_nb_free */
    return 0;
}

static int set_ring(int fd, int opt, uint32_t size)
{
    return setsockopt(fd, SOL_XDP, opt, &size, sizeof(size)) == 0 ? 0 : -errno;
}

/* The tx ring on its own socket (xsk.h, separate_tx), once s->fd is bound: bound to the
 * same device and queue with XDP_SHARED_UMEM, it shares s->fd's buffer pool, so it
 * may have no fill or completion ring of its own and no bind flags (the kernel
 * refuses both: xsk_bind); its frames complete on s->comp. */
static int open_tx_socket(struct xsk_sock *s, const struct xsk_config *cfg, int *stage)
{
    struct xdp_mmap_offsets off;
    socklen_t optlen = sizeof(off);
    int err;
    *stage = XSK_STAGE_SOCKET;
    s->tx_fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (s->tx_fd < 0)
        return -errno;
    *stage = XSK_STAGE_RING_SIZE;
    if ((err = set_ring(s->tx_fd, XDP_TX_RING, cfg->tx_size)))
        return err;
    *stage = XSK_STAGE_MMAP_OFFSETS;
    if (getsockopt(s->tx_fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen) != 0)
        return -errno;
    *stage = XSK_STAGE_MMAP;
    if ((err = ring_map(s->tx_fd, &s->tx, &off.tx, cfg->tx_size, sizeof(struct xdp_desc),
                        XDP_PGOFF_TX_RING, 1)))
        return err;
    struct sockaddr_xdp sxdp;
    memset(&sxdp, 0, sizeof(sxdp));
    sxdp.sxdp_family = AF_XDP;
    sxdp.sxdp_flags = XDP_SHARED_UMEM;
    sxdp.sxdp_ifindex = cfg->ifindex;
    sxdp.sxdp_queue_id = cfg->queue;
    sxdp.sxdp_shared_umem_fd = (uint32_t)s->fd;
    *stage = XSK_STAGE_BIND;
    if (bind(s->tx_fd, (struct sockaddr *)&sxdp, sizeof(sxdp)) != 0)
        return -errno;
    return 0;
}

int xsk_sock_open(struct xsk_sock *s, const struct xsk_config *cfg, struct xsk_frames *frames,
                  uint32_t owner, int *stage)
{
    int err;
    struct xdp_mmap_offsets off;
    socklen_t optlen = sizeof(off);

    memset(s, 0, sizeof(*s));
    s->fd = -1;
    s->tx_fd = -1;
    if (owner == FRAME_FREE || owner >= FRAME_APP)
        return -EINVAL;
    if (cfg->separate_tx && cfg->rx_size == 0) {
        *stage = XSK_STAGE_RING_SIZE;
        return -EINVAL; /* the first socket would have neither rx nor tx: bind refuses it */
    }
    s->owner = owner;
    s->frames = frames;
    s->need_wakeup = (cfg->bind_flags & XDP_USE_NEED_WAKEUP) != 0;

    *stage = XSK_STAGE_SOCKET;
    s->fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (s->fd < 0)
        return -errno;
    if (!cfg->separate_tx)
        s->tx_fd = s->fd;

    if (cfg->shared_fd < 0) {
        struct xdp_umem_reg reg;
        memset(&reg, 0, sizeof(reg));
        reg.addr = cfg->umem_addr;
        reg.len = cfg->umem_len;
        reg.chunk_size = cfg->frame_size;
        reg.headroom = cfg->headroom;
        *stage = XSK_STAGE_UMEM_REG;
        if (setsockopt(s->fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) != 0)
            goto fail_errno;
    }

    /* Every socket has its own fill and completion rings, also when it shares the
     * UMEM of a socket on another queue (required since Linux 5.10 for that case). */
    *stage = XSK_STAGE_RING_SIZE;
    if ((err = set_ring(s->fd, XDP_UMEM_FILL_RING, cfg->fill_size)) ||
        (err = set_ring(s->fd, XDP_UMEM_COMPLETION_RING, cfg->comp_size)) ||
        (err = set_ring(s->fd, XDP_RX_RING, cfg->rx_size)) ||
        (!cfg->separate_tx && (err = set_ring(s->fd, XDP_TX_RING, cfg->tx_size))))
        goto fail;

    *stage = XSK_STAGE_MMAP_OFFSETS;
    if (getsockopt(s->fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen) != 0)
        goto fail_errno;

    *stage = XSK_STAGE_MMAP;
    if ((err = ring_map(s->fd, &s->fill, &off.fr, cfg->fill_size, sizeof(uint64_t),
                        XDP_UMEM_PGOFF_FILL_RING, 1)) ||
        (err = ring_map(s->fd, &s->comp, &off.cr, cfg->comp_size, sizeof(uint64_t),
                        XDP_UMEM_PGOFF_COMPLETION_RING, 0)) ||
        (err = ring_map(s->fd, &s->rx, &off.rx, cfg->rx_size, sizeof(struct xdp_desc),
                        XDP_PGOFF_RX_RING, 0)) ||
        (!cfg->separate_tx &&
         (err = ring_map(s->fd, &s->tx, &off.tx, cfg->tx_size, sizeof(struct xdp_desc),
                         XDP_PGOFF_TX_RING, 1))))
        goto fail;

    struct sockaddr_xdp sxdp;
    memset(&sxdp, 0, sizeof(sxdp));
    sxdp.sxdp_family = AF_XDP;
    sxdp.sxdp_flags = cfg->bind_flags;
    sxdp.sxdp_ifindex = cfg->ifindex;
    sxdp.sxdp_queue_id = cfg->queue;
    if (cfg->shared_fd >= 0) {
        sxdp.sxdp_flags |= XDP_SHARED_UMEM;
        sxdp.sxdp_shared_umem_fd = (uint32_t)cfg->shared_fd;
    }
    *stage = XSK_STAGE_BIND;
    if (bind(s->fd, (struct sockaddr *)&sxdp, sizeof(sxdp)) != 0)
        goto fail_errno;
    if (cfg->separate_tx && (err = open_tx_socket(s, cfg, stage)) < 0)
        goto fail;
    return 0;

fail_errno:
    err = -errno;
fail:
    xsk_sock_close(s);
    return err;
}

int xsk_sock_close(struct xsk_sock *s)
{
    int err = 0;
    xsk_tx_thread_stop(s); /* before the rings it reads go away */
    ring_unmap(&s->rx);
    ring_unmap(&s->tx);
    ring_unmap(&s->fill);
    ring_unmap(&s->comp);
    /* The tx socket first: it holds a reference to s->fd's buffer pool. */
    if (s->tx_fd >= 0 && s->tx_fd != s->fd && close(s->tx_fd) != 0)
        err = -errno;
    s->tx_fd = -1;
    if (s->fd >= 0) {
        /* Closing the last reference unbinds the socket and removes it from every
         * XSKMAP (xsk_release); from here the kernel touches none of its frames. */
        if (close(s->fd) != 0)
            err = -errno;
        s->fd = -1;
    }
    return err;
}

int xsk_sock_statistics(struct xsk_sock *s, struct xdp_statistics *out)
{
    socklen_t len = sizeof(*out);
    memset(out, 0, sizeof(*out));
    if (getsockopt(s->fd, SOL_XDP, XDP_STATISTICS, out, &len) != 0)
        return -errno;
    if (s->tx_fd >= 0 && s->tx_fd != s->fd) {
        /* The tx socket counts only its tx ring's events. */
        struct xdp_statistics tx;
        socklen_t tx_len = sizeof(tx);
        memset(&tx, 0, sizeof(tx));
        if (getsockopt(s->tx_fd, SOL_XDP, XDP_STATISTICS, &tx, &tx_len) != 0)
            return -errno;
        out->tx_invalid_descs += tx.tx_invalid_descs;
        out->tx_ring_empty_descs += tx.tx_ring_empty_descs;
    }
    return (int)len;
}

int xsk_sock_zerocopy(struct xsk_sock *s)
{
    struct xdp_options opts;
    socklen_t len = sizeof(opts);
    if (getsockopt(s->fd, SOL_XDP, XDP_OPTIONS, &opts, &len) != 0)
        return -errno;
    return (opts.flags & XDP_OPTIONS_ZEROCOPY) != 0;
}

/* --- batch operations -------------------------------------------------------------- */

/* Move up to n free frames onto the fill ring. */
int xsk_fill(struct xsk_sock *s, uint32_t n)
{
    struct xsk_frames *f = s->frames;
    uint32_t idx, ring_idx, got, done = 0;
    uint32_t chunk_idx[256];

    while (done < n) {
        uint32_t want = n - done > 256 ? 256 : n - done;
        uint32_t room = prod_nb_free(&s->fill, want);
        if (room < want)
            want = room;
        if (want == 0)
            break;
        pthread_mutex_lock(&f->lock);
        got = frames_pop_locked(f, chunk_idx, want, (uint8_t)s->owner);
        pthread_mutex_unlock(&f->lock);
        if (got == 0)
            break;
        prod_reserve(&s->fill, got, &ring_idx);
        for (idx = 0; idx < got; idx++)
            *ring_addr(&s->fill, ring_idx + idx) = (uint64_t)chunk_idx[idx] << f->shift;
        prod_submit(&s->fill);
        done += got;
    }
    s->st.fill_frames += done;
    return (int)done;
}

static inline void wake_fill(struct xsk_sock *s)
{
    /* need_wakeup: the driver sleeps until asked; without it, it never sleeps. */
    if (s->need_wakeup && prod_needs_wakeup(&s->fill)) {
        recvfrom(s->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
        s->st.rx_wakeups++;
    }
}

static inline uint32_t rx_take(struct xsk_sock *s, struct xdp_desc *out, uint32_t max)
{
    uint32_t idx, n, kept = 0;
    n = cons_peek(&s->rx, max, &idx);
    if (n == 0)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct xdp_desc *d = ring_desc(&s->rx, idx + i);
        uint32_t fi;
        if (frame_index(s->frames, d->addr, &fi) &&
            frame_cas(s->frames, fi, (uint8_t)s->owner, FRAME_APP)) {
            out[kept++] = *d;
        } else {
            s->st.rejected_rx++;
        }
    }
    cons_release(&s->rx);
    s->st.rx_frames += kept;
    return kept;
}

int xsk_wait(struct xsk_sock *s, short events, int timeout_ms)
{
    /* POLLOUT is the tx ring's, on its own socket with separate_tx; that socket is
     * polled only for it (in copy mode a poll of it transmits, under its lock). */
    struct pollfd p[2] = {{.fd = s->fd, .events = (short)(events & ~POLLOUT)},
                          {.fd = s->tx_fd, .events = (short)(events & POLLOUT)}};
    int n = 1;
    if (s->tx_fd == s->fd)
        p[0].events = events;
    else if (events & POLLOUT)
        n = 2;
    int r = poll(p, (nfds_t)n, timeout_ms);
    if (r < 0)
        return -errno;
    return r == 0 ? 0 : (p[0].revents | (n == 2 ? p[1].revents : 0));
}

int xsk_rx(struct xsk_sock *s, struct xdp_desc *out, uint32_t max, int timeout_ms)
{
    uint32_t n = rx_take(s, out, max);
    if (n > 0)
        return (int)n;
    wake_fill(s);
    if (timeout_ms == 0)
        return (int)rx_take(s, out, max);
    int r = xsk_wait(s, POLLIN, timeout_ms);
    if (r < 0)
        return r;
    return (int)rx_take(s, out, max);
}

/* xsk_rx for callers that keep their own arrays (the engine's NIC): addresses and
 * lengths of up to max received frames land in addrs/lens, no descriptor array to
 * allocate per call. Never waits. */
int xsk_rx_split(struct xsk_sock *s, uint64_t *addrs, uint32_t *lens, uint32_t max)
{
    struct xdp_desc descs[256];
    uint32_t total = 0;
    while (total < max) {
        uint32_t want = max - total > 256 ? 256 : max - total;
        uint32_t n = rx_take(s, descs, want);
        if (n == 0 && total == 0) {
            wake_fill(s);
            n = rx_take(s, descs, want);
        }
        if (n == 0)
            break;
        for (uint32_t i = 0; i < n; i++) {
            addrs[total + i] = descs[i].addr;
            lens[total + i] = descs[i].len;
        }
        total += n;
    }
    return (int)total;
}

/* Give received frames back to the kernel through the fill ring. Frames the fill ring
 * cannot take (it is smaller than the frames in flight) go to the free stack. */
int xsk_release(struct xsk_sock *s, const struct xdp_desc *descs, uint32_t n)
{
    struct xsk_frames *f = s->frames;
    uint32_t ring_idx, placed = 0, accepted = 0;
    uint32_t room = prod_nb_free(&s->fill, n);
    if (room > n)
        room = n;
    prod_reserve(&s->fill, room, &ring_idx);
    uint32_t i = 0;
    for (; i < n && placed < room; i++) {
        uint32_t fi;
        if (frame_index(f, descs[i].addr, &fi) &&
            frame_cas(f, fi, FRAME_APP, (uint8_t)s->owner)) {
            /* Aligned mode: the kernel accepts any address inside the chunk; hand back
             * the chunk start so that its headroom is applied afresh. */
            *ring_addr(&s->fill, ring_idx + placed++) = (uint64_t)fi << f->shift;
        } else {
            s->st.rejected_fill++;
        }
    }
    /* Refused descriptors left reserved slots unused: retract them before publishing. */
    s->fill.cached_prod -= room - placed;
    if (placed)
        prod_submit(&s->fill);
    s->st.fill_frames += placed;
    accepted = placed;
    if (i < n) {
        int freed = xsk_frames_free_descs(f, descs + i, n - i);
        s->st.rejected_fill += (n - i) - (uint32_t)freed;
        accepted += (uint32_t)freed;
    }
    return (int)accepted;
}

/* xsk_release for frames named by address (as xsk_rx_split handed them out). */
int xsk_release_addrs(struct xsk_sock *s, const uint64_t *addrs, uint32_t n)
{
    struct xdp_desc descs[256];
    uint32_t done = 0;
    int accepted = 0;
    while (done < n) {
        uint32_t chunk = n - done > 256 ? 256 : n - done;
        for (uint32_t i = 0; i < chunk; i++) {
            descs[i].addr = addrs[done + i];
            descs[i].len = 0;
            descs[i].options = 0;
        }
        accepted += xsk_release(s, descs, chunk);
        done += chunk;
    }
    return accepted;
}

/* Wake the kernel until it has consumed the tx ring up to `prod`. Copy mode transmits
 * inside sendto() at most a budget of frames per call (32 by default) and answers
 * EAGAIN when more remain: call again until the ring is drained, but never more often
 * than the frames outstanding could need. Shared by the caller's own kick and the tx
 * thread, each with its own counters (every counter has one writer). */
int xsk_kick_rounds(struct xsk_sock *s, uint32_t prod, uint64_t *kicks, uint64_t *errors)
{
    uint32_t pending = prod - ring_load_acquire(s->tx.consumer);
    uint32_t rounds = pending / 16 + 2;
    for (uint32_t i = 0; i < rounds; i++) {
        __atomic_store_n(kicks, *kicks + 1, __ATOMIC_RELAXED);
        if (sendto(s->tx_fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0) {
            if ((int32_t)(ring_load_acquire(s->tx.consumer) - prod) >= 0)
                return 0;
            continue;
        }
        if (errno == EAGAIN || errno == EINTR)
            continue;
        /* Transient back-pressure (libxdp's kick_tx treats these alike). */
        if (errno == ENOBUFS || errno == EBUSY)
            return 0;
        __atomic_store_n(errors, *errors + 1, __ATOMIC_RELAXED);
        return -errno;
    }
    return 0;
}

int xsk_kick_here(struct xsk_sock *s)
{
    return kick_here(s);
}

/* Wake the kernel from this thread. Completions are reaped first: copy mode sends a
 * frame only while the completion ring has room for it, and this thread is that
 * ring's only consumer (the tx thread never reaps). */
static int kick_here(struct xsk_sock *s)
{
    xsk_complete(s, 1u << 20);
    if (!tx_wakeup_wanted(s))
        return 0;
    return xsk_kick_rounds(s, s->tx.cached_prod, &s->st.tx_kicks, &s->st.kick_errors);
}

int xsk_kick(struct xsk_sock *s)
{
    if (s->tx_thread != NULL)
        return xsk_tx_thread_kick(s);
    return kick_here(s);
}

static int tx_queue(struct xsk_sock *s, const struct xdp_desc *descs, uint32_t n, int mode);

int xsk_tx(struct xsk_sock *s, const struct xdp_desc *descs, uint32_t n)
{
    return tx_queue(s, descs, n, XSK_TX_KICK);
}

/* Place descs on the tx ring as far as it has room; how far into descs we got (frames
 * the frame table refuses are skipped and counted). */
static uint32_t tx_place(struct xsk_sock *s, const struct xdp_desc *descs, uint32_t n,
                         uint32_t *placed_out)
{
    struct xsk_frames *f = s->frames;
    uint32_t ring_idx, placed = 0;
    uint32_t room = prod_reserve(&s->tx, n, &ring_idx);
    uint64_t frame_size = 1ull << f->shift;
    uint32_t i = 0;
    for (; i < n && placed < room; i++) {
        const struct xdp_desc *d = &descs[i];
        uint32_t fi;
        uint64_t offset = d->addr & (frame_size - 1);
        if (d->len > 0 && offset + d->len <= frame_size && frame_index(f, d->addr, &fi) &&
            frame_cas(f, fi, FRAME_APP, (uint8_t)s->owner)) {
            *ring_desc(&s->tx, ring_idx + placed++) = *d;
        } else {
            s->st.rejected_tx++;
        }
    }
    s->tx.cached_prod -= room - placed;
    if (placed)
        prod_submit(&s->tx);
    s->st.tx_frames += placed;
    *placed_out += placed;
    return i;
}

/* Queue descs (n of them) per `mode` (enum xsk_tx_mode): a caller that queues several
 * batches in one round wakes the kernel once at its end (xsk_kick), and copy mode's
 * per-sendto cost is paid once for all of them. Returns how far into descs it got
 * (frames from there on are still the caller's), or -errno if nothing was queued. */
static int tx_queue(struct xsk_sock *s, const struct xdp_desc *descs, uint32_t n, int mode)
{
    uint32_t placed = 0;
    uint32_t i = tx_place(s, descs, n, &placed);
    int err = 0;
    if (i < n && mode == XSK_TX_NOWAIT) {
        /* Full: start the drain without waiting for it (the tx thread's wake-up, or
         * this thread's sendto when there is no thread), and take what fits now. The
         * consumer as the ring was found full, before the retry: room made from here
         * on is what xsk_tx_want_room must see. */
        uint32_t cons = ring_load_acquire(s->tx.consumer);
        err = xsk_kick(s);
        if (err == 0)
            i += tx_place(s, descs + i, n - i, &placed);
        if (i < n)
            s->full_cons = cons;
        s->st.tx_ring_full += n - i;
    } else if (i < n) {
        /* The ring is full: only the kernel draining it makes room, and in this
         * thread, not the tx thread's: the caller wants that room now. Each kick
         * drains the ring (copy mode); go on while each kick makes room, at most
         * n / ring-size times. */
        uint32_t before = placed;
        for (;;) {
            uint32_t progress = placed;
            err = kick_here(s);
            if (err < 0)
                break;
            i += tx_place(s, descs + i, n - i, &placed);
            if (i == n || placed == progress)
                break;
        }
        if (mode == XSK_TX_KICK && placed > before && err == 0)
            err = xsk_kick(s);
        s->st.tx_ring_full += n - i;
    } else if (mode == XSK_TX_KICK && placed) {
        err = xsk_kick(s);
    }
    if (err < 0 && placed == 0)
        return err;
    return (int)i;
}

/* Up to `want` free frames as transmit descriptors at `offset`; how many were taken.
 * An empty allocator means the frames sit in the tx ring or on the completion ring:
 * reap completions, and if none came, wake the kernel (copy mode transmits, and so
 * completes, inside sendto; XSK_TX_NOWAIT: the cheap way, xsk_kick) and reap again.
 * 0 only when the NIC holds every frame. */
static uint32_t tx_frames_take(struct xsk_sock *s, struct xdp_desc *out, uint32_t want,
                               uint64_t offset, int mode)
{
    struct xsk_frames *f = s->frames;
    uint32_t idx[256];
    uint32_t got = 0;
    for (int attempt = 0; attempt < 3 && got < want; attempt++) {
        if (attempt == 2 && got == 0) {
            if (mode == XSK_TX_NOWAIT) {
                s->full_cons = ring_load_acquire(s->tx.consumer); /* xsk_tx_want_room */
                xsk_kick(s);
            } else {
                kick_here(s);
            }
        }
        if (attempt > 0)
            xsk_complete(s, 1u << 20);
        pthread_mutex_lock(&f->lock);
        uint32_t n = frames_pop_locked(f, idx, want - got, FRAME_APP);
        pthread_mutex_unlock(&f->lock);
        for (uint32_t i = 0; i < n; i++) {
            out[got + i].addr = ((uint64_t)idx[i] << f->shift) + offset;
            out[got + i].len = 0;
            out[got + i].options = 0;
        }
        got += n;
        if (attempt == 1 && got > 0)
            break; /* some room: the caller comes back for the rest */
    }
    return got;
}

/* Copy n frames (src + src_offs[i], lens[i] bytes) into free UMEM frames and queue
 * them, all in one call: the per-frame work of a sender that builds its frames
 * elsewhere (the TCP engine's batch builder). Frames that do not fit a UMEM frame are
 * skipped. Returns how many frames from the start of the list were consumed (queued
 * or skipped); a short count means the ring or the allocator ran out even after the
 * kernel was woken to drain it. */
int xsk_tx_copy(struct xsk_sock *s, uint8_t *umem, uint64_t tx_offset, const uint8_t *src,
                const uint64_t *src_offs, const uint32_t *lens, uint32_t n)
{
    return xsk_tx_copy_kick(s, umem, tx_offset, src, src_offs, lens, n, XSK_TX_KICK);
}

int xsk_tx_copy_kick(struct xsk_sock *s, uint8_t *umem, uint64_t tx_offset,
                     const uint8_t *src, const uint64_t *src_offs, const uint32_t *lens,
                     uint32_t n, int kick)
{
    struct xdp_desc descs[256];
    uint32_t src_index[256];
    uint64_t room = (1ull << s->frames->shift) - tx_offset;
    uint32_t done = 0;
    while (done < n) {
        uint32_t chunk = 0, scanned = 0;
        while (done + scanned < n && chunk < 256) {
            uint32_t len = lens[done + scanned];
            if (len > 0 && len <= room)
                src_index[chunk++] = done + scanned;
            else
                s->st.rejected_tx++;
            scanned++;
        }
        if (chunk == 0) {
            done += scanned;
            continue;
        }
        uint32_t got = tx_frames_take(s, descs, chunk, tx_offset, kick);
        for (uint32_t i = 0; i < got; i++) {
            uint32_t k = src_index[i];
            memcpy(umem + descs[i].addr, src + src_offs[k], lens[k]);
            descs[i].len = lens[k];
        }
        int sent = got ? tx_queue(s, descs, got, kick) : 0;
        if (sent < 0)
            sent = 0;
        if (got > 0 && (uint32_t)sent == got && got < chunk) {
            done = src_index[got - 1] + 1; /* the allocator gave part: ask again */
            continue;
        }
        if ((uint32_t)sent < chunk) {
            if ((uint32_t)sent < got)
                xsk_frames_free_descs(s->frames, descs + sent, got - (uint32_t)sent);
            /* Consumed: everything before the first frame not queued (skipped ones
             * included, already counted). */
            return (int)(sent == 0 ? src_index[0] : src_index[sent - 1] + 1);
        }
        done += scanned;
    }
    return (int)done;
}

/* Completed tx frames go back to the free stack. */
int xsk_complete(struct xsk_sock *s, uint32_t max)
{
    struct xsk_frames *f = s->frames;
    uint32_t idx, total = 0;
    while (total < max) {
        uint32_t want = max - total > 256 ? 256 : max - total;
        uint32_t n = cons_peek(&s->comp, want, &idx);
        if (n == 0)
            break;
        pthread_mutex_lock(&f->lock);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t fi;
            if (frame_index(f, *ring_addr(&s->comp, idx + i), &fi) &&
                frame_cas(f, fi, (uint8_t)s->owner, FRAME_FREE))
                f->stack[f->top++] = fi;
            else
                s->st.rejected_comp++;
        }
        pthread_mutex_unlock(&f->lock);
        cons_release(&s->comp);
        total += n;
    }
    s->st.comp_frames += total;
    return (int)total;
}

uint32_t xsk_rx_pending(struct xsk_sock *s)
{
    return ring_load_acquire(s->rx.producer) - s->rx.cached_cons;
}

uint32_t xsk_tx_outstanding(struct xsk_sock *s)
{
    return (uint32_t)(s->st.tx_frames - s->st.comp_frames);
}
