/* xsk: AF_XDP rings, UMEM frame table and a tiny XDP loader, for the cffi module xsk._xsk.
 *
 * This header doubles as the cffi cdef: the build script drops its comments and
 * preprocessor lines, so everything below the includes must be plain declarations.
 * Every function returns a count (>= 0) or a negative errno; none of them aborts.
 */
#ifndef JOYRIDE_XSK_H
#define JOYRIDE_XSK_H

#include <stddef.h>
#include <stdint.h>
#include <linux/if_xdp.h>

/* One mmapped ring. The cached indices are ours; producer/consumer point into the
 * shared page and are accessed only with acquire loads / release stores. */
struct xsk_ring {
    uint32_t cached_prod;
    uint32_t cached_cons;
    uint32_t mask;
    uint32_t size;
    uint32_t *producer;
    uint32_t *consumer;
    void *ring;
    uint32_t *flags;
    void *map;
    size_t map_len;
};

/* Frame table of one UMEM: who owns each frame, and a stack of the free ones. */
struct xsk_frames;

struct xsk_sock_stats {
    uint64_t rx_frames;        /* descriptors taken from the rx ring */
    uint64_t tx_frames;        /* descriptors placed on the tx ring */
    uint64_t fill_frames;      /* addresses placed on the fill ring */
    uint64_t comp_frames;      /* addresses taken from the completion ring */
    uint64_t tx_kicks;         /* sendto() calls that woke the kernel for tx */
    uint64_t rx_wakeups;       /* recvfrom() calls that woke the kernel for fill */
    uint64_t kick_errors;      /* sendto() failures other than the transient ones */
    uint64_t tx_ring_full;     /* frames a send could not queue (tx ring full) */
    uint64_t rejected_fill;    /* release of a frame the application did not own */
    uint64_t rejected_tx;      /* send of a frame the application did not own */
    uint64_t rejected_comp;    /* completion of a frame the kernel did not own */
    uint64_t rejected_rx;      /* rx descriptor naming a frame the kernel did not own */
    uint64_t tx_thread_wakeups; /* times the engine woke the tx thread (its eventfd) */
    uint64_t tx_thread_kicks;  /* sendto() calls made by the tx thread (only it writes) */
    uint64_t tx_thread_errors; /* its sendto() failures other than the transient ones */
};

/* The copy-mode transmit thread of one socket (xsk_tx_thread.c). */
struct xsk_tx_thread;

struct xsk_sock {
    int fd;                    /* rx, fill and completion rings; the XSKMAP's entry */
    int tx_fd;                 /* the tx ring's socket: fd, or its own (separate_tx) */
    uint32_t owner;            /* this socket's tag in the frame table (1..254) */
    int need_wakeup;
    struct xsk_frames *frames;
    struct xsk_ring rx;
    struct xsk_ring tx;
    struct xsk_ring fill;
    struct xsk_ring comp;
    struct xsk_sock_stats st;
    struct xsk_tx_thread *tx_thread; /* NULL: every kick is a sendto() in the caller */
    uint32_t full_cons;        /* the tx consumer when a send last found no room */
};

/* separate_tx: in copy mode every poll() of a socket with a tx ring transmits from that
 * ring under the socket's mutex (xsk_poll drives tx: the kernel sets XDP_WAKEUP_TX for
 * every copy-mode pool, need_wakeup or not). A loop that waits for rx in epoll while a
 * tx thread transmits then spins on that mutex for as long as each of the thread's
 * sendto() runs, the receiver's whole input path included on veth. With separate_tx the
 * tx ring lives on a second socket bound to the same queue and sharing the first's
 * buffer pool (XDP_SHARED_UMEM; its completions arrive on the first socket's ring), so
 * polling fd for rx never transmits; poll tx_fd for POLLOUT. */
struct xsk_config {
    uint32_t ifindex;
    uint32_t queue;
    uint32_t rx_size;
    uint32_t tx_size;
    uint32_t fill_size;
    uint32_t comp_size;
    uint16_t bind_flags;       /* XDP_COPY / XDP_ZEROCOPY / XDP_USE_NEED_WAKEUP / XDP_SHARED_UMEM */
    int shared_fd;             /* socket that registered the UMEM, or -1 to register it here */
    int separate_tx;           /* 1: the tx ring on a second socket of the same queue */
    uint64_t umem_addr;
    uint64_t umem_len;
    uint32_t frame_size;
    uint32_t headroom;
};

/* Stages of xsk_sock_open, so that an errno can be named precisely. */
enum xsk_stage {
    XSK_STAGE_SOCKET = 1,
    XSK_STAGE_UMEM_REG = 2,
    XSK_STAGE_RING_SIZE = 3,
    XSK_STAGE_MMAP_OFFSETS = 4,
    XSK_STAGE_MMAP = 5,
    XSK_STAGE_BIND = 6,
    XSK_STAGE_OPTIONS = 7
};

extern const int XSK_MAP_HUGETLB;
extern const uint32_t XSK_PACKET_HEADROOM;

/* frame table */
struct xsk_frames *xsk_frames_new(uint32_t count, uint32_t frame_size);
void xsk_frames_destroy(struct xsk_frames *f);
uint32_t xsk_frames_free_count(struct xsk_frames *f);
uint32_t xsk_frames_owned_by(struct xsk_frames *f, uint32_t owner);
int xsk_frames_alloc(struct xsk_frames *f, uint64_t *out, uint32_t n);
int xsk_frames_alloc_descs(struct xsk_frames *f, struct xdp_desc *out, uint32_t n,
                           uint64_t offset, uint32_t len);
int xsk_frames_free(struct xsk_frames *f, const uint64_t *addrs, uint32_t n);
int xsk_frames_free_descs(struct xsk_frames *f, const struct xdp_desc *descs, uint32_t n);
int xsk_frames_reclaim(struct xsk_frames *f, uint32_t owner);
int xsk_frames_state(struct xsk_frames *f, uint64_t addr);

/* socket lifecycle */
int xsk_sock_open(struct xsk_sock *s, const struct xsk_config *cfg, struct xsk_frames *frames,
                  uint32_t owner, int *stage);
int xsk_sock_close(struct xsk_sock *s);
int xsk_sock_statistics(struct xsk_sock *s, struct xdp_statistics *out);
int xsk_sock_zerocopy(struct xsk_sock *s);

/* batch operations: one call moves many descriptors */
int xsk_fill(struct xsk_sock *s, uint32_t n);
int xsk_rx(struct xsk_sock *s, struct xdp_desc *out, uint32_t max, int timeout_ms);
int xsk_release(struct xsk_sock *s, const struct xdp_desc *descs, uint32_t n);
int xsk_rx_split(struct xsk_sock *s, uint64_t *addrs, uint32_t *lens, uint32_t max);
int xsk_release_addrs(struct xsk_sock *s, const uint64_t *addrs, uint32_t n);
int xsk_tx(struct xsk_sock *s, const struct xdp_desc *descs, uint32_t n);
int xsk_tx_copy(struct xsk_sock *s, uint8_t *umem, uint64_t tx_offset, const uint8_t *src,
                const uint64_t *src_offs, const uint32_t *lens, uint32_t n);
/* xsk_tx_copy_kick's `kick`: what it does after queueing, and when the ring or the
 * frame allocator is full. */
enum xsk_tx_mode {
    /* Queue without waking the kernel; when full, wake it in this thread (copy mode
     * transmits inside sendto) and go on while each wake-up makes room. */
    XSK_TX_QUEUE = 0,
    /* The same, and wake the kernel once the frames are queued. */
    XSK_TX_KICK = 1,
    /* Never wait: when full, wake the kernel the cheap way (the tx thread, if there is
     * one), take what fits at once, and return how far it got; the caller keeps the
     * rest and offers it again (the data plane, which waits in epoll meanwhile). */
    XSK_TX_NOWAIT = 2
};
int xsk_tx_copy_kick(struct xsk_sock *s, uint8_t *umem, uint64_t tx_offset,
                     const uint8_t *src, const uint64_t *src_offs, const uint32_t *lens,
                     uint32_t n, int kick);
int xsk_complete(struct xsk_sock *s, uint32_t max);
int xsk_kick(struct xsk_sock *s);
int xsk_kick_here(struct xsk_sock *s); /* sendto() in the caller, tx thread or not */
int xsk_wait(struct xsk_sock *s, short events, int timeout_ms);
uint32_t xsk_rx_pending(struct xsk_sock *s);
uint32_t xsk_tx_outstanding(struct xsk_sock *s);

/* copy-mode transmit on a helper thread: kicks of min_batch frames or more wake it
 * instead of calling sendto() (whose cost is mostly the receiver's path, run inline) */
int xsk_tx_thread_start(struct xsk_sock *s, uint32_t min_batch);
void xsk_tx_thread_stop(struct xsk_sock *s);
/* Room on the tx ring, told by the tx thread: the caller of an XSK_TX_NOWAIT send that
 * found no room asks with want=1 and waits for xsk_tx_room_fd (an eventfd) to become
 * readable, which happens once the thread has transmitted from the ring since. Returns
 * 1 when that already happened or completions freed frames (do not wait), 0 when
 * asked, -ENOTCONN without a thread
 * of this process (then poll tx_fd for POLLOUT, or look again later). Asking reaps the
 * completion ring and kicks the thread, so that it can move the ring. A kernel that
 * refuses to transmit (back-pressure, an error) moves nothing and nothing is told:
 * bound the wait. want=0 withdraws the question. Each call drains the eventfd: call it
 * again after every wake-up. */
int xsk_tx_room_fd(struct xsk_sock *s);
int xsk_tx_want_room(struct xsk_sock *s, int want);

/* minimal XDP loader over bpf(2) */
int xsk_bpf_xskmap_create(uint32_t entries);
int xsk_bpf_prog_load_redirect(int map_fd, char *log, uint32_t log_size);
int xsk_bpf_link_create(int prog_fd, uint32_t ifindex, uint32_t flags);
int xsk_bpf_map_update(int map_fd, uint32_t key, uint32_t value);
int xsk_bpf_map_delete(int map_fd, uint32_t key);
int xsk_bpf_prog_id(int prog_fd, uint32_t *id);
int xsk_bpf_map_id(int map_fd, uint32_t *id);
int xsk_bpf_link_id(int link_fd, uint32_t *id);

#endif
