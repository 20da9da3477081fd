/* The C data plane; the contract is in dataplane.h, the design in docs/dataplane.md.
 *
 * Every TCP rule here is a transcription of the Python core's rule of the same name
 * (joyride/tcp/connection.py, congestion.py, rtt.py), which stays the authority: the
 * differential tests (tests/unit/dataplane) feed both the same segments and compare
 * what they send and the state they end in. A rule the Python core changes must
 * change here too, or the tests fail.
 *
 * Sequence comparisons are modulo 2**32 (RFC 9293 §3.4): sdiff(a, b) < 0 is "a < b".
 */
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "capture.h"
#include "dataplane.h"
#include "wire.h"

_Static_assert(sizeof(struct dp_desc) == 16, "struct dp_desc is struct xdp_desc");

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define ACK_EVERY 2          /* RFC 5681 §4.2: ACK every second full-sized segment */
#define ABC_LIMIT 0xFFFF     /* congestion.py's ABC_LIMIT: every segment acked counts */
#define CUBIC_C 0.4          /* RFC 9438 §5.1 */
#define CUBIC_BETA 0.7
#define INITIAL_SSTHRESH 0x7FFFFFFFu /* congestion.INITIAL_SSTHRESH (RFC 5681 §3.1) */
/* HyStart++ (RFC 9406 §4.3; hystart.py's constants) */
#define HS_MIN_RTT_THRESH 0.004
#define HS_MAX_RTT_THRESH 0.016
#define HS_MIN_RTT_DIVISOR 8
#define HS_N_RTT_SAMPLE 8u
#define HS_CSS_GROWTH_DIVISOR 4u
#define HS_CSS_ROUNDS 5u
#define HS_PHASE_CSS 1u
#define HS_PHASE_OFF 2u /* TcpConfig.hystart off */
#define HS_ACK_TRAIN_LOW_WINDOW 16u /* hystart.py's ACK_TRAIN_LOW_WINDOW (segments) */
#define HS_ACK_TRAIN_DELTA 0.002   /* ... and ACK_TRAIN_DELTA (s) */
/* The timing wheel: 1 ms ticks, WHEEL_SLOTS of them per turn (a deadline further out
 * waits in its slot for the turns in between). */
#define WHEEL_SLOTS 1024u
#define WHEEL_MASK (WHEEL_SLOTS - 1)
#define MAX_EVENTS 64
#define ARENA_BATCHES 4
#define HOST_QUEUE_RECHECK 0.001 /* s: a timer due while the flow's data frames wait */
#define ARENA_DATA 0x80000000u   /* in arena_flow: the frame carries data (slots < 2^24) */
#define TX_QUANTUM 16 /* data segments a flow sends a round while others wait for room */
#define PAWS_IDLE (24.0 * 24 * 3600)   /* RFC 7323 §5.5 (options.PAWS_IDLE) */
#define SYN_FALLBACK_RTO 3.0           /* RFC 6298 §5.7 (rtt.SYN_FALLBACK_RTO) */
#define MIN_SMSS 64u                   /* options._MIN_SMSS */
#define REUSE_ISS_GAP (65535u + 2u)    /* engine.REUSE_ISS_GAP: RFC 6191 reuse, as Linux */
#define OOW_ACK_INTERVAL 0.5           /* timewait.OOW_ACK_INTERVAL */
#define CONN_NAME_BASE 1000000000000ull /* C's connection names: far above Python's */

/* The sequence number in the names of the connections C delivers: one per process, as a
 * name must be unique while its socket lives, whichever struct dp made it. */
static uint64_t conn_name_seq;

/* The N of a new connection name: unique in the process, whichever struct dp names. */
static uint64_t conn_name_next(void)
{
    return CONN_NAME_BASE + __atomic_add_fetch(&conn_name_seq, 1, __ATOMIC_RELAXED);
}

enum flow_state { FLOW_FREE = 0, FLOW_C = 1, FLOW_HANDBACK = 2 };

/* Tags of epoll events: the low 32 bits name what became ready. */
#define TAG_PORT (1ull << 62)
#define TAG_WATCH (1ull << 61)
#define TAG_FLOW (1ull << 60)
#define TAG_ROOM (1ull << 59)
#define TAG_DOOR (1ull << 58)
#define TAG_ADOOR (1ull << 57) /* an application arena's door (chan_claim.h): its index */
/* How often the loop unmaps the arenas no channel uses: a departed application's
 * mapping keeps its memory alive, and a live one's next claim maps it again. */
#define ARENA_TRIM_SECONDS 10.0
/* An application descriptor is read on EPOLLIN; EPOLLRDHUP says its writer shut down,
 * so that the EOF behind the last bytes is read in the same round and the FIN leaves
 * with them (else the peer may see the data, close first, and sit in TIME-WAIT). */
#define APP_IN (EPOLLIN | EPOLLRDHUP)
/* A stream's socket after its EOF was read: watched for its close alone. epoll reports
 * EPOLLHUP and EPOLLERR whatever the mask; EPOLLERR is named so that the registration's
 * mask is not 0, which epoll_set reads as "not registered". */
#define APP_HANGUP EPOLLERR
/* round_at's result besides the DP_WAKE_* bits: the round received or read something
 * (dp_run keeps spinning after such a round, when a spin is configured). */
#define ROUND_BUSY 0x100

typedef int (*rx_fn)(void *, struct dp_desc *, uint32_t, int);
typedef int (*release_fn)(void *, const struct dp_desc *, uint32_t);
typedef int (*tx_copy_fn)(void *, uint8_t *, uint64_t, const uint8_t *, const uint64_t *,
                          const uint32_t *, uint32_t, int);
typedef int (*kick_fn)(void *);
typedef int (*complete_fn)(void *, uint32_t);
typedef int (*want_room_fn)(void *, int);

/* A byte ring: len bytes from head, in a buffer of size bytes that grows on demand up
 * to cap (the TCP buffer it stands for: what the window is computed from). A
 * request/response flow stays at a page or two; only a bulk flow grows it to cap.
 * Reset to the start whenever it empties, so it keeps touching the same pages.
 * The receive ring also keeps hold bytes past len: the out-of-order ranges at their
 * offsets, with the holes between them (whose bytes mean nothing until filled). */
struct ring {
    uint8_t *buf;
    uint32_t cap;
    uint32_t size;
    uint32_t head;
    uint32_t len;
    uint32_t hold;
    /* buf is a channel's tx data, not the pool's (snd_borrow): never grown nor freed,
     * and head follows the channel's tx_head, also when the ring is empty. */
    uint8_t borrowed;
};

#define RING_MIN 4096u
#define APP_READ_BUDGET 65536u /* bytes app_read takes from an application per call */
#define RING_POOL 1024u

#include "channels.c"

/* Buffers of RING_MIN bytes kept for the next flows: a short connection's two rings
 * are all the memory it allocates, and malloc/free of them cost a tenth of the
 * service's CPU per connection (perf, connection-rate load, 2026-12-03). */
struct ring_pool {
    uint8_t *bufs[RING_POOL];
    uint32_t n;
};

struct flow {
    struct dp_tcb t;
    struct wire_template tmpl;
    struct ring rcv;           /* received in order, not yet taken by the application */
    struct ring snd;           /* from SND.UNA: unacknowledged, then unsent */
    uint32_t gen;
    uint32_t seen_window;      /* the spin's flow window it last counted in (spin_for) */
    uint32_t hnext;            /* next slot + 1 in the hash chain, 0: end */
    uint32_t live_pos;         /* index in dp->live */
    uint32_t epoll_mask;       /* events registered for app_fd (0: not registered) */
    uint8_t state;             /* enum flow_state */
    uint8_t touched;           /* in dp->touched this round */
    uint8_t tx_waiting;        /* in dp->tx_wait: it stopped sending, the NIC was full */
    uint16_t in_arena;         /* its frames in the arena, not yet taken by the NIC */
    uint16_t data_in_arena;    /* ... of them, those that carry data */
    uint8_t gso_sticky;        /* its data goes by GSO only, from its first such send */
    uint8_t snd_copies;        /* a bulk writer: tx is copied, never borrowed (chan_read) */
    uint64_t xsk_mark;         /* frames placed on the tx ring up to its last (gso_ready) */
    uint8_t app_readable;      /* epoll said the application has bytes for us */
    uint8_t app_hup;           /* ... and that it shut down writing (EOF follows them) */
    uint8_t app_closed;        /* ... and reading too (EPOLLHUP): it closed its end */
    uint8_t app_err;           /* ... with bytes we gave it unread (EPOLLERR: the unix
                                  socket's ECONNRESET), which were lost */
    uint8_t chan_again;        /* in dp->again: its channel has work for the next round */
    uint8_t in_ringpoll;       /* in dp->ringpoll: its rings are polled, not armed */
    uint8_t in_doorwait;       /* in dp->doorwait: armed, its application rings the door */
    uint8_t app_rung;          /* epoll said its socket has bytes: doorbells to drain */
    /* Its entry in the timing wheel: one per flow, for its earliest deadline or an
     * earlier one (a deadline that moves later leaves the entry, which on coming due
     * early is moved; as Linux's timers and the engine's heap do). */
    double wheel_at;           /* 0: not in the wheel */
    uint32_t wheel_next;       /* slot + 1 of the next/previous flow in the bucket */
    uint32_t wheel_prev;
    /* TIME-WAIT (timewait.py's record): the window field it advertises, and when it
     * last answered an out-of-window segment without payload (rate limit). */
    uint16_t tw_window;
    double tw_last_oow;
    /* SYN-SENT (dp_connect): what its SYN offered, and how many times it is sent again */
    struct dp_syn_offer offer;
    uint32_t max_syn_retries;
    uint64_t name_n;           /* an active open's: the N of its socket's name (conn_name) */
};

/* A destination's learned path MSS (dp_path_mss). */
struct path_entry {
    uint8_t ip[16];
    uint8_t ipv6;
    uint16_t mss;              /* with options; 0: empty */
    double expires;
};

/* A port whose connections C opens (dp_listen). */
struct listener {
    struct dp_listen_cfg cfg;
    uint32_t half_open;        /* its flows in SYN-RECEIVED */
    uint32_t rr;               /* the next unix listener, round robin */
};

struct dp {
    struct dp_config cfg;
    struct dp_stats st;
    struct dp_counts ended;    /* dp_ended_counts: born flows that ended in C */
    double idle_from;          /* when the loop last found nothing to do (0: busy) */
    double arenas_trim_at;     /* when idle arenas are next unmapped (dp_chan_trim) */
    double spin_window;        /* seconds the next spin may last (dp_spin_window; 0: none) */
    uint32_t spin_stopped;     /* chances passed while stopped (a probe every 16th) */
    int load_fd;               /* /proc/loadavg, for the run queue (-1: not looked at) */
    long n_cpus;
    double load_at;            /* when the run queue was last looked at */
    int load_busy;             /* and whether a task was waiting for a CPU then */
    /* Flows that received a segment in this and the last millisecond's window: the spin
     * is for a few waiting flows (spin_for). */
    double flows_window_at;
    uint32_t flows_window;     /* the window's number (a flow's seen_window) */
    uint32_t flows_now, flows_before;
    struct dp_chans *chans;    /* shared-memory channels (channels.c; the workers share one) */
    struct jr_bell *bell;      /* the bell of this process's own application (embedded
                                  mode, dp_set_bell; hub.c), or NULL */
    struct jr_door *door;      /* ... and its door, which wakes the loop (TAG_DOOR) */
    uint32_t *doorwait;        /* flows of the door's channels armed at the last sleep */
    uint32_t n_doorwait;
    uint8_t door_rung;
    uint8_t door_python;       /* Python runs ring flows of the door's: its ring wakes it */
    uint32_t *again;           /* flows whose channel had work when they settled */
    uint32_t n_again;
    uint32_t *ringpoll;        /* ring-mode flows polled each round (chan_settle) */
    uint32_t n_ringpoll;
    struct flow *flows;
    uint32_t *free_slots;
    uint32_t n_free;
    uint32_t *buckets;         /* slot + 1, 0: empty */
    uint32_t bucket_mask;
    uint32_t *live;            /* C-owned or handed-back flows, dense */
    uint32_t n_live;
    uint32_t *touched;
    uint32_t n_touched;
    struct dp_port ports[8];
    uint32_t n_ports;
    int epfd;
    /* this round's received frames */
    struct dp_desc *descs;
    uint64_t *rx_offs;
    uint32_t *rx_lens;
    struct wire_parsed *parsed;
    struct wire_addr6 *parsed6; /* an IPv6 record's addresses, beside it */
    /* frames built by C, sent in one NIC call per round */
    uint8_t *arena;
    uint64_t *arena_offs;
    uint32_t *arena_caps;
    uint32_t *arena_lens;
    uint32_t *arena_flow;      /* the flow slot each frame is of (| ARENA_DATA) */
    uint32_t arena_slots;
    /* The last arena_reserve slots only control segments (SYN-ACK, RST, TIME-WAIT's and
     * pure ACKs) may use: a NIC full of data must not stop a handshake or an ACK. */
    uint32_t arena_reserve;
    uint32_t arena_used;       /* frames built and not yet taken by the NIC, oldest first */
    int kick_owed;
    /* Transmit back-pressure (Linux's TCP small queues, in spirit): when the NIC takes
     * no more, frames stay in the arena and flows stop sending (data only) until a
     * later round finds room; dp_run waits for the NIC to say so (tx_want_room). */
    int tx_full;               /* a flush this round left the data slots full */
    int out_armed;             /* the first port was asked to tell of room (tx_want_room) */
    int room_told;             /* its room_fd was readable in this round's epoll */
    int room_ready;            /* its answer: room came already, look again at once */
    /* Flows waiting for room, a FIFO over max_flows slots (each flow at most once):
     * served from the head a quantum each, back to the tail while they have more, so
     * that flows share a full NIC round robin (a qdisc's fair queueing, in spirit). */
    uint32_t *tx_wait;
    uint32_t tx_wait_head;
    uint32_t n_tx_wait;
    /* declined frames, for Python */
    uint8_t *dec;
    uint64_t *dec_offs;
    uint32_t *dec_lens;
    uint32_t n_dec;
    /* frames another worker received for a flow of this plane's (dp_inject), taken at
     * the start of the next round: up to cfg.batch of cfg.max_frame bytes each */
    uint8_t *inj;
    uint32_t *inj_lens;
    uint32_t n_inj;
    /* handed-back flows, for Python */
    int64_t *handbacks;
    uint32_t n_handbacks;
    uint32_t *wheel;           /* WHEEL_SLOTS buckets: slot + 1 of the first flow */
    uint64_t wheel_tick;       /* every tick before this one has been run */
    uint32_t wheel_count;      /* flows in the wheel */
    double wake_hint;          /* next_wake's answer kept: a lower bound (0: none kept) */
    uint16_t ip_id;
    /* connections born in C */
    struct listener *listeners;
    uint32_t n_listeners;
    struct path_entry paths[DP_PATH_SLOTS]; /* dp_path_mss: learned path MSS */
    int pid;
    struct ring_pool pool;
    /* TIME-WAIT flows, oldest first (handles; stale ones are skipped): the first to
     * go when the table is full, as engine.py drops its oldest record. */
    int64_t *tw_fifo;
    uint32_t tw_head;
    uint32_t tw_count;
    /* failed active opens, oldest first, for dp_failures (a ring) */
    struct dp_failure failures[DP_FAILURES_KEPT];
    uint32_t fail_head;
    uint32_t fail_count;
    struct sessions *sessions; /* OP_CONNECT answered in C (sessions.c), NULL: none */
    struct cap *cap;           /* joyride capture's tap (capture.h), NULL: off */
    /* GSO (dp_set_gso): the AF_PACKET socket, -1 off; and the frames placed on the tx
     * ring up to Python's last (dp_transmit), which may be any flow's */
    int gso_fd;
    uint64_t py_mark;
};

static inline int32_t sdiff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }
static inline uint32_t umin(uint32_t a, uint32_t b) { return a < b ? a : b; }
static inline uint32_t umax(uint32_t a, uint32_t b) { return a > b ? a : b; }

static double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* --- rings ----------------------------------------------------------------------- */


static uint8_t *pool_get(struct ring_pool *p, uint64_t size)
{
    if (size == RING_MIN && p->n)
        return p->bufs[--p->n];
    return malloc(size);
}

static void pool_put(struct ring_pool *p, uint8_t *buf, uint32_t size)
{
    if (buf != NULL && size == RING_MIN && p->n < RING_POOL) {
        p->bufs[p->n++] = buf;
        return;
    }
    free(buf);
}

static void ring_init(struct ring *r, uint32_t cap)
{
    r->buf = NULL;
    r->cap = cap;
    r->size = r->head = r->len = r->hold = 0;
    r->borrowed = 0;
}

/* An empty ring gives its buffer back to the pool: it is a new flow's ring again (no
 * buffer until ring_room), which every ring function takes. */
static void ring_release(struct ring_pool *pool, struct ring *r)
{
    if (r->len != 0 || r->hold != 0 || r->borrowed)
        return;
    pool_put(pool, r->buf, r->size);
    r->buf = NULL;
    r->size = r->head = 0;
}

/* Copy n bytes from offset off (n + off <= len + hold) without consuming them. */
static void ring_copy(const struct ring *r, uint32_t off, uint8_t *dst, uint32_t n)
{
    if (n == 0)
        return;
    uint32_t start = (r->head + off) % r->size;
    uint32_t first = umin(n, r->size - start);
    memcpy(dst, r->buf + start, first);
    memcpy(dst + first, r->buf, n - first);
}

/* Make room for need more bytes past len (need <= cap - len): 0, or -ENOMEM (nothing
 * lost). The held bytes past len move with the rest. */
static int ring_room(struct ring_pool *pool, struct ring *r, uint32_t need)
{
    if (r->size - r->len >= need)
        return 0;
    if (r->borrowed)
        return -ENOMEM; /* its size is the channel's (cap <= size: no caller gets here) */
    uint64_t want = r->size ? r->size : RING_MIN;
    while (want - r->len < need)
        want *= 2;
    if (want > r->cap)
        want = r->cap;
    uint8_t *grown = pool_get(pool, want);
    if (grown == NULL)
        return -ENOMEM;
    ring_copy(r, 0, grown, r->len + r->hold); /* linearized: head moves to 0 */
    pool_put(pool, r->buf, r->size);
    r->buf = grown;
    r->size = (uint32_t)want;
    r->head = 0;
    return 0;
}

/* Write n bytes at offset off past len (off + n <= size - len: ring_room first). */
static void ring_write_at(struct ring *r, uint32_t off, const uint8_t *src, uint32_t n)
{
    uint32_t at = (r->head + r->len + off) % r->size;
    uint32_t first = umin(n, r->size - at);
    memcpy(r->buf + at, src, first);
    memcpy(r->buf, src + first, n - first);
}

/* Append n bytes; the caller checked n <= cap - len. Returns bytes taken. Appended
 * bytes fill the start of the held region (the hole before the first range). */
static uint32_t ring_put(struct ring_pool *pool, struct ring *r, const uint8_t *src,
                         uint32_t n)
{
    n = umin(n, r->cap - r->len);
    if (n == 0 || ring_room(pool, r, n) < 0)
        return 0;
    ring_write_at(r, 0, src, n);
    r->len += n;
    r->hold = r->hold > n ? r->hold - n : 0;
    return n;
}

static void ring_consume(struct ring *r, uint32_t n)
{
    n = umin(n, r->len);
    r->len -= n;
    r->head = r->len || r->hold || r->borrowed ? (r->head + n) % r->size : 0;
}

/* The buffer's free space as at most two spans, for readv. */
static int ring_free_iov(struct ring *r, struct iovec iov[2])
{
    uint32_t free_bytes = r->size - r->len;
    if (free_bytes == 0)
        return 0;
    uint32_t tail = (r->head + r->len) % r->size;
    uint32_t first = umin(free_bytes, r->size - tail);
    iov[0].iov_base = r->buf + tail;
    iov[0].iov_len = first;
    if (first == free_bytes)
        return 1;
    iov[1].iov_base = r->buf;
    iov[1].iov_len = free_bytes - first;
    return 2;
}


/* Bytes [off, off + n) of the data (off + n <= len) as at most two spans, for sendmsg. */
static int ring_span_iov(const struct ring *r, uint32_t off, uint32_t n, struct iovec iov[2])
{
    uint32_t start = (r->head + off) % r->size;
    uint32_t first = umin(n, r->size - start);
    iov[0].iov_base = r->buf + start;
    iov[0].iov_len = first;
    if (first == n)
        return 1;
    iov[1].iov_base = r->buf;
    iov[1].iov_len = n - first;
    return 2;
}

/* All the data as at most two spans, for writev. */
static int ring_data_iov(const struct ring *r, struct iovec iov[2])
{
    return r->len ? ring_span_iov(r, 0, r->len, iov) : 0;
}

/* --- the send ring borrowed from the channel's tx (docs/channels.md, "Sending straight
 * from tx") ----------------------------------------------------------------------------
 * A ring-mode flow's send ring is its channel's tx itself, as TAS's send buffer is its
 * application's queue: the service takes tx's bytes in place (jr_chan_svc_tx_peek),
 * sends them from there (the AF_XDP frame's copy, or GSO's sendmsg) and gives their
 * space back to the application only once they are acknowledged (snd_give_back). The
 * copy into a ring of the service's own is gone: it was a fifth of the copies on the
 * way out (perf, nginx 64 KiB bodies, 2026-12-07). The invariant while borrowed:
 * snd.head is tx_head within tx, and snd.len is tx_seen - tx_head. Everything that
 * reads the send ring (emit, GSO, a hand-back's copy) works on either kind. */

/* Borrow tx as f's send ring, once f's own is empty (bytes taken before the claim, or
 * given with an adoption, go first). 1 if borrowed. */
static int snd_borrow(struct dp *dp, struct flow *f, struct jr_chan_svc *s)
{
    struct ring *r = &f->snd;
    if (r->borrowed)
        return 1;
    if (r->len != 0 || r->hold != 0 || s->tx_seen != s->tx_head || f->snd_copies)
        return 0;
    pool_put(&dp->pool, r->buf, r->size);
    r->buf = s->tx_data;
    r->size = s->tx_cap;
    r->head = s->tx_head & (s->tx_cap - 1);
    r->cap = umin(f->t.snd_cap, s->tx_cap);
    r->borrowed = 1;
    dp->st.chan_tx_borrowed++;
    return 1;
}

/* The room a writer waiting on a borrowed send ring is woken for: a third of tx, as
 * Linux wakes a socket's writer once the free space is half what is queued
 * (sk_stream_min_wspace). Woken for each acknowledgment, iperf3 -R spent more than twice
 * the kernel's CPU per byte (a filler drain, a wake-up and a short write each). */
#define SND_WAKE_ROOM(cap) ((cap) / 3)

/* n bytes at the head of a borrowed send ring are done with (acknowledged, or copied
 * elsewhere; all: the flow gives tx up, and a writer is woken whatever room that
 * leaves): their space goes back to the application, whose writer may wait for it. The
 * drain that wakes the writer may take a revert request off the socket too:
 * ringpoll_scan looks for one every round (chan.h's "drain, then look"). */
static void snd_give_back(struct dp *dp, struct flow *f, uint32_t n, int all)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, f->t.chan);
    if (s == NULL)
        return;
    int act = jr_chan_svc_tx_release(s, n, all ? 0 : SND_WAKE_ROOM(s->tx_cap));
    if ((act & JR_CHAN_DRAIN) && f->t.app_fd >= 0)
        jr_chan_svc_drain(s, f->t.app_fd);
}

/* The flow goes on without its channel (its application closed, a revert): the bytes
 * still to send or to be acknowledged move to a send ring of the service's own, and tx
 * is given back whole. 0, or -ENOMEM (nothing changed: still borrowed). */
static int snd_unborrow(struct dp *dp, struct flow *f)
{
    struct ring *r = &f->snd, own;
    if (!r->borrowed)
        return 0;
    ring_init(&own, f->t.snd_cap);
    if (r->len != 0) {
        if (ring_room(&dp->pool, &own, r->len) < 0)
            return -ENOMEM;
        ring_copy(r, 0, own.buf, r->len);
    }
    own.len = r->len;
    *r = own;
    snd_give_back(dp, f, own.len, 1);
    return 0;
}

/* A borrowed send ring whose bytes are no longer wanted (the flow ends, or they were
 * copied out: dp_flow_release): tx given back whole, the ring empty and the pool's kind. */
static void snd_drop_borrowed(struct dp *dp, struct flow *f)
{
    struct ring *r = &f->snd;
    if (!r->borrowed)
        return;
    uint32_t n = r->len;
    ring_init(r, f->t.snd_cap);
    snd_give_back(dp, f, n, 1);
}

/* --- flow table -------------------------------------------------------------------- */

/* A 4-tuple as the flow table keys it: IPv4 addresses in the first 4 bytes of 16, the
 * rest 0 (struct dp_tcb's layout), and the family, so that no IPv4 flow can match an
 * IPv6 one whose address starts with the same 4 bytes. */
struct tuple {
    uint8_t lip[16];
    uint8_t rip[16];
    uint16_t lport;
    uint16_t rport;
    uint8_t ipv6;
};

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t tuple_hash(const struct tuple *k)
{
    uint64_t h = (load64(k->rip) ^ load64(k->lip) * 0xFF51AFD7ED558CCDull) *
                 0x9E3779B97F4A7C15ull;
    h ^= (load64(k->rip + 8) ^ load64(k->lip + 8) * 0xFF51AFD7ED558CCDull ^ k->ipv6) *
         0xC4CEB9FE1A85EC53ull;
    h ^= ((uint64_t)k->rport << 16 | k->lport) * 0xC2B2AE3D27D4EB4Full;
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

static inline struct tuple tuple_of(const struct dp_tcb *t)
{
    struct tuple k = {.lport = t->local_port, .rport = t->remote_port, .ipv6 = t->ipv6};
    memcpy(k.lip, t->local_ip, 16);
    memcpy(k.rip, t->remote_ip, 16);
    return k;
}

/* The 4-tuple of a parsed segment, seen from our side (its destination is local). */
static inline struct tuple tuple_rx(const struct wire_parsed *p, const struct wire_addr6 *a6)
{
    struct tuple k = {.lport = p->dst_port, .rport = p->src_port, .ipv6 = p->family == 6};
    if (k.ipv6) {
        memcpy(k.lip, a6->dst, 16);
        memcpy(k.rip, a6->src, 16);
    } else {
        memcpy(k.lip, &p->dst_ip, 4);
        memcpy(k.rip, &p->src_ip, 4);
    }
    return k;
}

/* The 4-tuple the control plane names (ip_len 4 or 16 bytes each, network order). */
static inline struct tuple tuple_raw(const uint8_t *local_ip, uint16_t local_port,
                                     const uint8_t *remote_ip, uint16_t remote_port,
                                     uint32_t ip_len)
{
    struct tuple k = {.lport = local_port, .rport = remote_port, .ipv6 = ip_len == 16};
    memcpy(k.lip, local_ip, ip_len);
    memcpy(k.rip, remote_ip, ip_len);
    return k;
}

/* The IP header emit() writes: IPv4's (no options) or IPv6's (no extension headers). */
static inline uint32_t ip_header_len(uint8_t ipv6)
{
    return ipv6 ? 40 : 20;
}

/* An IPv4 flow's addresses leave the last 12 of their 16 bytes zero (the key's form). */
static int ipv4_tail_clear(const struct dp_tcb *t)
{
    static const uint8_t zero[12];
    return memcmp(t->local_ip + 4, zero, 12) == 0 && memcmp(t->remote_ip + 4, zero, 12) == 0;
}

static uint32_t *bucket_of(struct dp *dp, const struct dp_tcb *t)
{
    struct tuple k = tuple_of(t);
    return &dp->buckets[tuple_hash(&k) & dp->bucket_mask];
}

static struct flow *flow_lookup(struct dp *dp, const struct tuple *k)
{
    uint32_t s = dp->buckets[tuple_hash(k) & dp->bucket_mask];
    while (s) {
        struct flow *f = &dp->flows[s - 1];
        if (f->t.remote_port == k->rport && f->t.local_port == k->lport &&
            f->t.ipv6 == k->ipv6 && memcmp(f->t.remote_ip, k->rip, 16) == 0 &&
            memcmp(f->t.local_ip, k->lip, 16) == 0)
            return f;
        s = f->hnext;
    }
    return NULL;
}

static inline int64_t handle_of(struct dp *dp, struct flow *f)
{
    return (int64_t)((uint64_t)f->gen << 32 | (uint64_t)(f - dp->flows));
}

/* The flow a handle names, or NULL when it is stale, foreign or free. */
static struct flow *flow_of(const struct dp *dp, int64_t handle)
{
    if (handle <= 0)
        return NULL;
    uint32_t slot = (uint32_t)handle;
    uint32_t gen = (uint32_t)((uint64_t)handle >> 32);
    if (slot >= dp->cfg.max_flows)
        return NULL;
    struct flow *f = &dp->flows[slot];
    return f->state != FLOW_FREE && f->gen == gen ? f : NULL;
}

/* --- timers: a hashed timing wheel ------------------------------------------------ */

static inline uint64_t tick_of(double at) { return (uint64_t)(at * 1000.0); }

static void wheel_unlink(struct dp *dp, struct flow *f)
{
    if (f->wheel_at == 0)
        return;
    if (f->wheel_prev)
        dp->flows[f->wheel_prev - 1].wheel_next = f->wheel_next;
    else
        dp->wheel[tick_of(f->wheel_at) & WHEEL_MASK] = f->wheel_next;
    if (f->wheel_next)
        dp->flows[f->wheel_next - 1].wheel_prev = f->wheel_prev;
    f->wheel_at = 0;
    f->wheel_next = f->wheel_prev = 0;
    dp->wheel_count--;
}

static void wheel_link(struct dp *dp, struct flow *f, double at)
{
    uint32_t *bucket = &dp->wheel[tick_of(at) & WHEEL_MASK];
    uint32_t self = (uint32_t)(f - dp->flows) + 1;
    f->wheel_at = at;
    if (dp->wake_hint != 0 && at < dp->wake_hint)
        dp->wake_hint = at; /* still a lower bound: next_wake's answer stays good */
    f->wheel_prev = 0;
    f->wheel_next = *bucket;
    if (*bucket)
        dp->flows[*bucket - 1].wheel_prev = self;
    *bucket = self;
    dp->wheel_count++;
}

/* A deadline of f was set to at: the wheel must look at f by then. */
static void timer_arm(struct dp *dp, struct flow *f, double at)
{
    if (at <= 0)
        return;
    if (tick_of(at) < dp->wheel_tick)
        at = ((double)dp->wheel_tick + 0.5) / 1000.0; /* overdue: the current bucket */
    if (f->wheel_at != 0 && f->wheel_at <= at)
        return; /* an entry as early or earlier is there already */
    wheel_unlink(dp, f);
    wheel_link(dp, f, at);
}

static double earliest_deadline(const struct dp_tcb *t)
{
    double next = 0;
    if (t->rto_at && (next == 0 || t->rto_at < next))
        next = t->rto_at;
    if (t->delack_at && (next == 0 || t->delack_at < next))
        next = t->delack_at;
    if (t->keepalive_at && (next == 0 || t->keepalive_at < next))
        next = t->keepalive_at;
    if (t->state_at && (next == 0 || t->state_at < next))
        next = t->state_at;
    if (t->pto_at && (next == 0 || t->pto_at < next))
        next = t->pto_at;
    if (t->rack_timeout && (next == 0 || t->rack_timeout < next))
        next = t->rack_timeout;
    if (t->claim_wait && t->claim_by && (next == 0 || t->claim_by < next))
        next = t->claim_by;
    return next;
}

/* Watch f's application descriptor for want (0: not at all). 0 or -errno. */
static int epoll_set(struct dp *dp, struct flow *f, uint32_t want)
{
    if (f->t.app_fd < 0 || want == f->epoll_mask)
        return 0;
    struct epoll_event ev = {.events = want, .data.u64 = TAG_FLOW | (uint64_t)(f - dp->flows)};
    int op = f->epoll_mask == 0 ? EPOLL_CTL_ADD : (want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD);
    int rc = epoll_ctl(dp->epfd, op, f->t.app_fd, &ev) == 0 ? 0 : -errno;
    if (rc == 0 || op == EPOLL_CTL_DEL)
        f->epoll_mask = want;
    return rc;
}

/* Close a born flow's application end, which only C holds: the descriptor is the
 * file's last (deliver makes it close-on-exec, and the service never forks), so the
 * close takes its epoll registration with it, and no EPOLL_CTL_DEL is needed. That
 * saves the call where a flow ends still registered (a reset, a timeout); a
 * Connection: close flow has dropped its registration at the hang-up already. */
static void app_fd_close(struct flow *f)
{
    f->epoll_mask = 0;
    close(f->t.app_fd);
    f->t.app_fd = -1;
}

static void half_open_done(struct dp *dp, const struct flow *f);

static void flow_forget(struct dp *dp, struct flow *f)
{
    if (f->t.tcp_state == DP_SYN_RECEIVED)
        half_open_done(dp, f); /* released by Python, or ended: its queue slot frees */
    if (f->t.born && f->t.tcp_state != DP_TIME_WAIT)
        dp->st.born_live--;
    if (f->t.tcp_state == DP_TIME_WAIT)
        dp->st.time_wait_live--;
    epoll_set(dp, f, 0);
    wheel_unlink(dp, f);
    uint32_t slot = (uint32_t)(f - dp->flows);
    uint32_t *link = bucket_of(dp, &f->t);
    while (*link && *link != slot + 1)
        link = &dp->flows[*link - 1].hnext;
    if (*link)
        *link = f->hnext;
    uint32_t last = dp->live[--dp->n_live];
    dp->live[f->live_pos] = last;
    dp->flows[last].live_pos = f->live_pos;
    dp->st.live = dp->n_live;
    pool_put(&dp->pool, f->rcv.buf, f->rcv.size);
    if (!f->snd.borrowed) /* else its channel's, released with it (snd_give_back) */
        pool_put(&dp->pool, f->snd.buf, f->snd.size);
    f->rcv.buf = f->snd.buf = NULL;
    f->snd.borrowed = 0;
    f->state = FLOW_FREE;
    /* Every handle to this slot is stale from now on. Generations stay in 1..2**31-1,
     * so a handle is always positive. */
    f->gen = f->gen >= 0x7FFFFFFFu ? 1 : f->gen + 1;
    dp->free_slots[dp->n_free++] = slot;
}

static void touch(struct dp *dp, struct flow *f)
{
    if (!f->touched) {
        f->touched = 1;
        dp->touched[dp->n_touched++] = (uint32_t)(f - dp->flows);
    }
}


/* Arena idx's door is gone (its application shut it): out of the epoll, and every
 * channel of the arena back to socket arms; the flows armed on the door are looked at
 * now (door_rung) and armed on their sockets before the loop sleeps. */
static void chan_drop_door(struct dp *dp, uint32_t idx)
{
    struct dp_chans *c = dp->chans;
    jr_arena_drop_door(&c->arenas.a[idx]);
    /* Only this plane's channels arm in door mode (chan_door_mode). */
    for (uint32_t id = 1; id <= c->max; id++) {
        struct jr_chan_svc *s = chan_svc(c, id);
        if (s != NULL && s->arena == (int32_t)idx && s->arena_door != NULL)
            s->arena_door = NULL;
    }
    dp->door_rung = 1;
    dp->st.chan_doors_dropped++;
}

/* chan's place in the list of channels Python waits on a door for (c->py_door), or
 * c->n_py_door if it is not there (under the table's lock). */
static uint32_t py_door_index(const struct dp_chans *c, uint32_t chan)
{
    uint32_t i = 0;
    while (i < c->n_py_door && c->py_door[i] != chan)
        i++;
    return i;
}

/* Python no longer waits on the door for chan (under the table's lock). */
static void py_door_forget(struct dp_chans *c, uint32_t chan)
{
    uint32_t i = py_door_index(c, chan);
    if (i < c->n_py_door)
        c->py_door[i] = c->py_door[--c->n_py_door];
}

/* A ring of arena idx's door (the plane that watches it, under the table's lock): 1 if
 * a channel whose pump sleeps on it has rx room now, or asks for a token, or its door
 * was dropped: Python must look (DP_WAKE_DOOR), and the channel leaves the list (its
 * pump arms again if it sleeps again). Another channel's ring may have taken the
 * door's word before this one's application read (chan.h: it takes svc_rx_armed, then
 * the word), so the word is armed again before the looks: the store-buffering pair
 * with the application's head store, fence and exchange of the word. Any other ring of
 * the arena (its many flows C runs) wakes Python for nothing. */
static int py_door_look(struct dp *dp, uint32_t idx, int dropped)
{
    struct dp_chans *c = dp->chans;
    int wake = 0, armed = 0;
    for (uint32_t i = 0; i < c->n_py_door;) {
        struct jr_chan_svc *s = chan_svc(c, c->py_door[i]);
        if (s != NULL && s->arena != (int32_t)idx) {
            i++;
            continue;
        }
        if (s != NULL && !dropped) {
            if (!armed) {
                uint32_t *word = jr_arena_door_word(&c->arenas, (int)idx, dp->epfd);
                if (word != NULL)
                    __atomic_store_n(word, 1, __ATOMIC_RELAXED);
                JR_FENCE(); /* the word before the looks at rx.head and rx_retoken */
                armed = 1;
            }
            if (jr_chan_svc_rx_room(s) == 0 && !JR_LOAD(&s->shm->rx_retoken)) {
                i++;
                continue;
            }
        }
        wake = 1; /* room, a token asked for, a broken index, or gone: Python looks */
        c->py_door[i] = c->py_door[--c->n_py_door];
    }
    return wake;
}

/* epoll said arena idx's door is readable (events): an application rang it. A datagram
 * a call is drained; what is left keeps it readable. A door its application shut (or
 * broke) would be readable for ever: it is dropped, and the arena's flows go back to
 * socket arms. Under the table's lock: another plane's claim may unmap an idle arena
 * (and close its door) at any time, and the event may be a stale one for an entry
 * since reused, whose door (if any) another plane watches. 1 when Python must look
 * (py_door_look). */
static int chan_door_rang(struct dp *dp, uint32_t idx, uint32_t events)
{
    struct dp_chans *c = dp->chans;
    int python = 0;
    chans_lock(c);
    if (idx < c->arenas.max && c->arenas.a[idx].wake.door_fd >= 0 &&
        c->arenas.a[idx].wake.door_epfd == dp->epfd) {
        int fd = c->arenas.a[idx].wake.door_fd;
        char junk[64];
        ssize_t r = 1;
        for (int k = 0; k < 64 && r >= 0; k++)
            r = recv(fd, junk, sizeof junk, MSG_DONTWAIT);
        int dropped = (events & (EPOLLHUP | EPOLLERR)) ||
                      (r < 0 && errno != EAGAIN && errno != EINTR);
        if (dropped)
            chan_drop_door(dp, idx);
        if (c->n_py_door)
            python = py_door_look(dp, idx, dropped);
    }
    chans_unlock(c);
    return python;
}

/* Whether the channel's arms are the data plane's, in door mode (chan.h,
 * JR_ARMED_DOOR): while C runs its flow, and only if its arena has a door that this
 * plane watches (another worker's loop would not hear this flow's application ring
 * it). The Python pump arms through the connection's socket, which it watches, but
 * while its writer is blocked (dp_chan_wait_door); any change here ends that wait. */
static void chan_door_mode(struct dp *dp, uint32_t chan, int on)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    if (s == NULL)
        return;
    chans_lock(dp->chans);
    s->arena_door = on ? jr_arena_door_word(&dp->chans->arenas, s->arena, dp->epfd) : NULL;
    if (dp->chans->n_py_door)
        py_door_forget(dp->chans, chan);
    chans_unlock(dp->chans);
}

/* C stops running f: its handle goes to Python, which releases it. */
static void connect_dropped(struct dp *dp, struct flow *f);

static void hand_back(struct dp *dp, struct flow *f, enum dp_reason why)
{
    if (f->state != FLOW_C)
        return;
    if (f->t.tcp_state == DP_SYN_SENT) {
        /* No TcpConnection knows an active open C runs: what would hand it back (its
         * application gone before an answer) ends it, as a close in SYN-SENT does
         * (RFC 9293 §3.10.4: delete the TCB, send nothing). */
        connect_dropped(dp, f);
        return;
    }
    /* A door arm taken after this rings the door, which wakes the loop for nothing; the
     * pump's own arm (the socket) overwrites it before the pump sleeps. */
    chan_door_mode(dp, f->t.chan, 0);
    f->state = FLOW_HANDBACK;
    f->t.reason = (uint8_t)why;
    epoll_set(dp, f, 0);
    wheel_unlink(dp, f);
    dp->st.handbacks[why]++;
    dp->handbacks[dp->n_handbacks++] = handle_of(dp, f);
}

/* --- RTT and congestion control (rtt.py, congestion.py) --------------------------- */

static double rto_of(const struct dp_tcb *t)
{
    /* RttEstimator.rto: floored base, doubled per backoff, capped. */
    double base = t->base_rto > t->min_rto ? t->base_rto : t->min_rto;
    double rto = base * (double)(1u << (t->rto_backoff < 30 ? t->rto_backoff : 30));
    return rto < t->max_rto ? rto : t->max_rto;
}

/* TcpConnection._tlp_possible (RFC 8985 §7.2): SACK, data outstanding, ESTABLISHED or
 * CLOSE-WAIT, no FIN sent; and LossRecovery.tlp_allowed: nothing SACKed, no duplicate
 * ACK (no recovery runs in C, and RecoveryPoint follows SND.UNA). */
static int tlp_allowed(const struct dp_tcb *t)
{
    return t->tlp_max_ack_delay >= 0 && t->sack_ok && t->snd_nxt != t->snd_una &&
           !t->fin_sent && (t->tcp_state == DP_ESTABLISHED || t->tcp_state == DP_CLOSE_WAIT) &&
           t->dupacks == 0 && t->sacked_bytes == 0;
}

/* TcpConnection._arm_pto with restart (RFC 8985 §7.2), after new data was sent or
 * acknowledged; cancelled when no probe may go. LossRecovery.pto: 2*SRTT, +
 * TLP.max_ack_delay with one segment in flight (else Linux's 2 ms, TLP_MIN_EXTRA), 1 s
 * before any sample; never later than the RTO. When it comes due the flow is handed
 * back: the probe is Python's. */
static void pto_arm(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    uint32_t flight = t->snd_nxt - t->snd_una;
    t->pto_at = 0;
    if (!tlp_allowed(t))
        return;
    double pto = t->srtt < 0 ? 1.0
                             : 2 * t->srtt + (flight <= t->smss ? t->tlp_max_ack_delay : 0.002);
    double at = now + pto;
    if (t->rto_at && at > t->rto_at)
        at = t->rto_at;
    t->pto_at = at;
    timer_arm(dp, f, at);
}

/* --- RACK's send times (RFC 8985 §6.1-6.2; LossRecovery.note_sent and _rack_ack) --- */

/* Records wholly below SND.UNA go; the one ending at it still times the octet just
 * below (LossRecovery: bisect_left(ends, snd_una)). */
static void tx_prune(struct dp_tcb *t)
{
    uint32_t k = 0;
    while (k < t->tx_count && sdiff(t->tx[k].end, t->snd_una) < 0)
        k++;
    if (k) {
        t->tx_count -= k;
        memmove(&t->tx[0], &t->tx[k], t->tx_count * sizeof t->tx[0]);
    }
}

/* LossRecovery.note_sent: new data up to end went at now. One record per send time;
 * when all DP_TX_RECORDS are taken the oldest goes, as Python's MAX_TX_RECORDS rule
 * (its octets then count as sent with the next record's: later, never earlier, so no
 * loss is declared sooner for it). */
static void tx_note(struct dp_tcb *t, uint32_t end, double now)
{
    if (!t->sack_ok)
        return; /* RACK needs SACK (RFC 8985 §2) */
    tx_prune(t);
    if (t->tx_count) {
        struct dp_tx *last = &t->tx[t->tx_count - 1];
        if (sdiff(end, last->end) <= 0)
            return;
        if (last->at == now) {
            last->end = end; /* the same send time: one record */
            return;
        }
        if (t->tx_count == DP_TX_RECORDS) {
            t->tx_count--;
            memmove(&t->tx[0], &t->tx[1], t->tx_count * sizeof t->tx[0]);
        }
    }
    t->tx[t->tx_count].end = end;
    t->tx[t->tx_count].at = now;
    t->tx_count++;
}

/* The send time of the octet seq (LossRecovery._tx_time): the first record ending
 * past it; < 0 when none does. */
static double tx_time(const struct dp_tcb *t, uint32_t seq)
{
    for (uint32_t k = 0; k < t->tx_count; k++)
        if (sdiff(t->tx[k].end, seq) > 0)
            return t->tx[k].at;
    return -1;
}

/* --- The sender's side of SACK outside recovery (LossRecovery.on_ack) -------------- */

/* One ACK's SACK blocks, as read from the frame (at most 4: RFC 2018 §3). */
struct sack_blocks {
    uint32_t n;
    uint32_t left[4];
    uint32_t right[4];
};

/* The scoreboard's ranges (SackScoreboard), for an update tried before it is kept. */
struct board {
    uint32_t count;
    uint32_t bytes;
    struct dp_range r[DP_SACK_RANGES];
};

static void read_sack_blocks(const uint8_t *frame, const struct wire_parsed *p,
                             struct sack_blocks *b)
{
    b->n = p->has_sack ? umin(p->sack_count, 4) : 0;
    const uint8_t *at = frame + (p->payload_off - p->tcp_hl) + p->sack_off;
    for (uint32_t k = 0; k < b->n; k++, at += 8) { /* wire.c's loads, big-endian */
        b->left[k] = ld32(at);
        b->right[k] = ld32(at + 4);
    }
}

/* Whether the segment's options are NOPs, EOL, timestamps and SACK blocks only (the
 * parser has checked their lengths). */
static int opts_ts_sack_only(const uint8_t *frame, const struct wire_parsed *p)
{
    const uint8_t *tcp = frame + (p->payload_off - p->tcp_hl);
    uint32_t i = 20;
    while (i < p->tcp_hl) {
        uint8_t kind = tcp[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        if (kind != 5 && kind != 8)
            return 0;
        i += tcp[i + 1];
    }
    return 1;
}

/* LossRecovery._on_dsack's test (RFC 2883 §5, RFC 3708 §2): the first block lies below
 * the ACK's own cumulative ACK, or inside the second block. */
static int is_dsack(const struct sack_blocks *b, uint32_t seg_ack)
{
    if (b->n == 0 || sdiff(b->right[0], b->left[0]) <= 0)
        return 0;
    if (sdiff(b->right[0], seg_ack) <= 0)
        return 1;
    return b->n > 1 && sdiff(b->left[0], b->left[1]) >= 0 && sdiff(b->right[1], b->right[0]) >= 0;
}

/* SackScoreboard.update on a copy: ranges at or below una go, the blocks inside
 * [una, nxt] are merged; the bytes newly SACKed. -1 when a new disjoint range finds no
 * room (Python keeps up to 256: the segment is Python's). */
static int64_t board_update(struct board *b, uint32_t una, uint32_t nxt,
                            const struct sack_blocks *blk)
{
    /* SackScoreboard._advance */
    uint32_t k = 0;
    for (; k < b->count && sdiff(b->r[k].end, una) <= 0; k++)
        b->bytes -= b->r[k].end - b->r[k].start;
    if (k) {
        b->count -= k;
        memmove(&b->r[0], &b->r[k], b->count * sizeof b->r[0]);
    }
    if (b->count && sdiff(b->r[0].start, una) < 0) {
        b->bytes -= una - b->r[0].start;
        b->r[0].start = una;
    }
    if (sdiff(nxt, una) <= 0)
        return 0;
    int64_t added = 0;
    for (uint32_t n = 0; n < blk->n; n++) {
        uint32_t lo = blk->left[n], hi = blk->right[n];
        if (!(sdiff(lo, una) >= 0 && sdiff(hi, lo) > 0 && sdiff(nxt, hi) >= 0))
            continue; /* D-SACK of old data, stale or forged: ignored */
        /* SackScoreboard._add: the ranges overlapping or touching [lo, hi) are i..j-1. */
        uint32_t i = 0, j;
        while (i < b->count && sdiff(b->r[i].end, lo) < 0)
            i++;
        j = i;
        while (j < b->count && sdiff(b->r[j].start, hi) <= 0)
            j++;
        if (i == j) {
            if (b->count == DP_SACK_RANGES)
                return -1;
            memmove(&b->r[i + 1], &b->r[i], (b->count - i) * sizeof b->r[0]);
            b->r[i].start = lo;
            b->r[i].end = hi;
            b->count++;
            b->bytes += hi - lo;
            added += hi - lo;
            continue;
        }
        uint32_t new_lo = sdiff(lo, b->r[i].start) < 0 ? lo : b->r[i].start;
        uint32_t new_hi = sdiff(hi, b->r[j - 1].end) > 0 ? hi : b->r[j - 1].end;
        uint32_t before = 0;
        for (uint32_t m = i; m < j; m++)
            before += b->r[m].end - b->r[m].start;
        b->r[i].start = new_lo;
        b->r[i].end = new_hi;
        memmove(&b->r[i + 1], &b->r[j], (b->count - j) * sizeof b->r[0]);
        b->count -= j - i - 1;
        b->bytes += (new_hi - new_lo) - before;
        added += (int64_t)(new_hi - new_lo) - before;
    }
    return added;
}

/* LossRecovery._reordering. */
static void reordering(struct dp_tcb *t)
{
    t->reordering_seen = 1;
}

/* LossRecovery.reo_wnd (RFC 8985 §6.2 step 4), outside recovery. */
static double reo_wnd(const struct dp_tcb *t)
{
    if (!t->reordering_seen && t->sacked_bytes >= t->dupthresh * t->smss)
        return 0.0;
    double wnd = (t->rack_min_rtt > 0 ? t->rack_min_rtt : 0.0) / 4 * t->reo_wnd_mult;
    return t->srtt >= 0 && t->srtt < wnd ? t->srtt : wnd;
}

/* LossRecovery.rack_detect (RFC 8985 §6.2 step 5) outside recovery (no retransmission
 * logged): sets the reordering timer; returns 1 with *lost_below (SackScoreboard.
 * rack_lost_below) when octets are lost. */
static int rack_detect(struct dp_tcb *t, double now, uint32_t *lost_below)
{
    t->rack_timeout = 0;
    if (t->rack_xmit_ts < 0 || !t->rack_mode)
        return 0;
    double xmit = t->rack_xmit_ts;
    double wait = t->rack_rtt + reo_wnd(t);
    uint32_t i = 0, n = t->tx_count;
    while (i < n && t->tx[i].at <= xmit && t->tx[i].at + wait <= now)
        i++;
    if (i < n && t->tx[i].at <= xmit && t->sacked_bytes)
        t->rack_timeout = t->tx[i].at + wait; /* a hole waits for the window to pass */
    if (i == 0)
        return 0;
    /* Never above RACK.end_seq: sent after the segment delivered (RACK_sent_after). */
    *lost_below = sdiff(t->rack_end_seq, t->tx[i - 1].end) < 0 ? t->rack_end_seq
                                                               : t->tx[i - 1].end;
    return 1;
}

/* SackScoreboard.is_sacked. */
static int is_sacked(const struct dp_tcb *t, uint32_t seq)
{
    for (uint32_t k = 0; k < t->sacked_count; k++)
        if (sdiff(seq, t->sacked[k].start) >= 0 && sdiff(seq, t->sacked[k].end) < 0)
            return 1;
    return 0;
}

/* SackScoreboard.is_lost(SND.UNA): RACK's verdict in RACK's mode, else RFC 6675 §4
 * IsLost(): DupThresh discontiguous SACKed ranges above, or more than (DupThresh - 1)
 * * SMSS bytes. */
static int una_lost(const struct dp_tcb *t, int rack, uint32_t rack_below)
{
    uint32_t below;
    if (t->rack_mode) {
        if (!rack)
            return 0;
        below = rack_below;
    } else {
        uint32_t limit = (t->dupthresh - 1) * t->smss, total = 0, count = 0;
        int found = 0;
        for (uint32_t k = t->sacked_count; k-- > 0;) {
            total += t->sacked[k].end - t->sacked[k].start;
            if (total > limit || ++count >= t->dupthresh) {
                below = t->sacked[k].start;
                found = 1;
                break;
            }
        }
        if (!found)
            return 0;
    }
    return sdiff(t->snd_una, below) < 0 && !is_sacked(t, t->snd_una);
}

/* LossRecovery.on_ack outside recovery, after the ACK moved SND.UNA by acked (< 0: an
 * old ACK) and the scoreboard became nb (newly SACKed: sacked_new): RACK's state
 * (_rack_ack), duplicate ACKs, limited transmit's count, and whether recovery begins
 * (1: the caller hands the flow back for Python to enter it, _enter). marker: an
 * undo episode is open (LossRecovery.undo_marker). */
static int sack_ack(struct dp_tcb *t, const struct board *nb, uint32_t sacked_new,
                    int64_t acked, int dupack, int marker, double now)
{
    uint32_t fack_before = t->sacked_count ? t->sacked[t->sacked_count - 1].end : 0;
    int had_fack = t->sacked_count != 0;
    uint32_t sacked_before = t->sacked_bytes;
    t->sacked_count = nb->count;
    t->sacked_bytes = nb->bytes;
    memcpy(t->sacked, nb->r, nb->count * sizeof nb->r[0]);
    /* _rack_ack: steps 1-3 (RFC 8985 §6.2). */
    tx_prune(t);
    int has_top = 0;
    uint32_t top = 0;
    if (sacked_new > 0) {
        uint32_t high = t->sacked[t->sacked_count - 1].end;
        if (!had_fack || sdiff(high, fack_before) > 0) {
            top = high - 1;
            has_top = 1;
        } else if (!marker) {
            reordering(t); /* a segment below RACK.fack delivered now, never resent */
        }
    } else if (acked > 0) {
        top = t->snd_una - 1;
        has_top = 1;
        if (had_fack && sdiff(fack_before, t->snd_una - (uint32_t)acked) > 0 && !marker)
            reordering(t); /* the hole was filled by the original transmission */
    }
    if (has_top) {
        double sent = tx_time(t, top);
        if (sent >= 0 && (t->rack_xmit_ts < 0 || sent >= t->rack_xmit_ts)) {
            /* RACK.end_seq: a tie in time goes to the higher sequence. */
            uint32_t end = top + 1;
            if (t->rack_xmit_ts < 0 || sent != t->rack_xmit_ts || sdiff(end, t->rack_end_seq) > 0)
                t->rack_end_seq = end;
            t->rack_xmit_ts = sent;
            t->rack_rtt = now - sent;
            if (t->rack_min_rtt < 0 || t->rack_rtt < t->rack_min_rtt)
                t->rack_min_rtt = t->rack_rtt;
        }
    }
    /* RACK decides once reordering was seen (after a loss probe too: RFC 8985 §7.4.1,
     * but no probe is outstanding in C). */
    t->rack_mode = t->reordering_seen;
    uint32_t lost_below = 0;
    int rack = rack_detect(t, now, &lost_below);
    /* The duplicate-ACK count (RFC 5681 §3.2; RFC 6675 §5: an ACK that SACKs new data
     * counts as one). */
    if (acked > 0) {
        t->dupacks = 0;
        t->lt_bytes = 0;
    } else if (dupack || (sacked_new > 0 && acked == 0)) {
        t->dupacks++;
    } else {
        return 0;
    }
    if (t->snd_nxt == t->snd_una)
        return 0;
    int enter = t->rack_mode ? una_lost(t, rack, lost_below)
                             : t->dupacks >= t->dupthresh || una_lost(t, rack, lost_below);
    if (!enter)
        return 0;
    int64_t delivered = acked + (int64_t)t->sacked_bytes - (int64_t)sacked_before;
    t->enter_pending = 1;
    t->enter_delivered = delivered > 0 ? (uint32_t)delivered : 0;
    t->enter_at = now;
    return 1;
}

/* LossRecovery.limited_transmit_allowance (RFC 3042 §2): on each of the first two
 * duplicate ACKs one more segment may go beyond cwnd. */
static uint32_t lt_allowance(const struct dp_tcb *t)
{
    if (t->dupacks == 0 || t->dupacks >= t->dupthresh)
        return 0;
    return umin(t->dupacks, 2) * t->smss;
}

static void rtt_sample(struct dp_tcb *t, double rtt)
{
    /* RttEstimator.sample, RFC 6298 §2.2-2.3 (alpha 1/8, beta 1/4, K 4). */
    if (!isfinite(rtt) || rtt < 0)
        return;
    if (t->srtt < 0) {
        t->srtt = rtt;
        t->rttvar = rtt / 2;
    } else {
        t->rttvar = 0.75 * t->rttvar + 0.25 * fabs(t->srtt - rtt);
        t->srtt = 0.875 * t->srtt + 0.125 * rtt;
    }
    double var = 4 * t->rttvar;
    t->base_rto = t->srtt + (t->rto_granularity > var ? t->rto_granularity : var);
    t->rtt_samples++;
    t->rto_backoff = 0;
    t->rtt_sample_count++;
}

/* _Base._slow_start: RFC 5681 §3.1 with RFC 3465 ABC, a quarter of it in HyStart++'s
 * conservative slow start (RFC 9406 §4.2); returns bytes left for CA. */
static uint32_t slow_start(struct dp_tcb *t, uint32_t acked)
{
    uint32_t inc = umin(acked, t->abc_limit * t->smss);
    if (t->hs_phase == HS_PHASE_CSS)
        inc /= HS_CSS_GROWTH_DIVISOR;
    uint32_t cap = umax(t->ssthresh, t->cwnd);
    uint64_t grown = (uint64_t)t->cwnd + inc;
    uint32_t next = grown < cap ? (uint32_t)grown : cap;
    uint32_t used = next - t->cwnd;
    t->cwnd = next;
    if (t->cwnd >= t->ssthresh)
        t->abc_limit = ABC_LIMIT;
    return t->cwnd >= t->ssthresh ? inc - used : 0;
}

static double w_cubic(const struct dp_tcb *t, double secs)
{
    double d = secs - t->cubic_k;
    return CUBIC_C * d * d * d * t->smss + t->cubic_w_max;
}

static void cubic_start_epoch(struct dp_tcb *t, double now)
{
    t->cubic_epoch_start = now;
    t->cubic_carry = 0;
    double cwnd_epoch = (double)t->cwnd;
    if (t->cubic_w_max <= cwnd_epoch) {
        t->cubic_w_max = cwnd_epoch;
        t->cubic_k = 0;
    } else {
        /* pow, as Python's ** (cbrt may differ in the last bit). */
        t->cubic_k = pow((t->cubic_w_max - cwnd_epoch) / t->smss / CUBIC_C, 1.0 / 3.0);
    }
    t->cubic_w_est = cwnd_epoch;
}

/* CongestionControl.on_ack for NewReno and Cubic (acked > 0, outside recovery). */
static void cc_on_ack(struct dp_tcb *t, double now, uint32_t acked)
{
    t->cc_pristine = 0;
    if (t->cc_kind == DP_CC_CUBIC && t->srtt >= 0)
        t->cubic_last_rtt = t->srtt;
    if (t->cwnd < t->ssthresh) {
        acked = slow_start(t, acked);
        if (!acked)
            return;
    }
    if (t->cc_kind == DP_CC_NEWRENO) {
        /* RFC 5681 §3.1 via RFC 3465 §2.1 byte counting. */
        t->reno_bytes_acked += acked;
        if (t->reno_bytes_acked >= t->cwnd) {
            t->reno_bytes_acked -= t->cwnd;
            t->cwnd += t->smss;
            t->reno_bytes_acked = umin(t->reno_bytes_acked, t->cwnd);
        }
        return;
    }
    if (t->cubic_epoch_start < 0 || now < t->cubic_epoch_start)
        cubic_start_epoch(t, now);
    double secs = now - t->cubic_epoch_start;
    double cwnd = (double)t->cwnd;
    double segs = (double)acked / t->smss;
    double alpha = t->cubic_w_est >= t->cubic_cwnd_prior ? 1.0
                                                         : 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA);
    t->cubic_w_est += alpha * segs * t->smss * t->smss / cwnd;
    double next;
    if (w_cubic(t, secs) < t->cubic_w_est) {
        next = t->cubic_w_est; /* RFC 9438 §4.3 Reno-friendly region */
    } else {
        double ahead = t->cubic_last_rtt >= 0 ? t->cubic_last_rtt : 0.0;
        double target = w_cubic(t, secs + ahead);
        if (target < cwnd)
            target = cwnd;
        if (target > 1.5 * cwnd)
            target = 1.5 * cwnd;
        next = cwnd + (target - cwnd) / cwnd * segs * t->smss;
        if (next > target)
            next = target;
    }
    double grow = next - cwnd + t->cubic_carry;
    if (grow > 0) {
        double whole = floor(grow);
        t->cubic_carry = grow - whole;
        t->cwnd += (uint32_t)whole;
    }
}

/* HyStart.reset: a new slow start. */
static void hystart_reset(struct dp_tcb *t)
{
    if (t->hs_phase != HS_PHASE_OFF)
        t->hs_phase = 0;
    t->hs_round_open = 0;
    t->hs_window_end = 0;
    t->hs_samples = 0;
    t->hs_css_rounds = 0;
    t->hs_last_round_min = INFINITY;
    t->hs_current_round_min = INFINITY;
    t->hs_css_baseline = INFINITY;
    t->hs_round_start = t->hs_last_ack_at = 0;
    t->hs_delay_min = INFINITY;
}

/* _Base.on_delivery and HyStart.on_ack (RFC 9406 §4.2, and Linux's ACK train): one
 * acceptable ACK of new data at now, SND.UNA already moved, with its RTT sample (< 0:
 * none). Only in the initial slow start (§4.3). */
static void hystart_ack(struct dp_tcb *t, double rtt, double now)
{
    if (t->ssthresh != INITIAL_SSTHRESH || t->hs_phase == HS_PHASE_OFF)
        return;
    if (!t->hs_round_open || sdiff(t->snd_una, t->hs_window_end) >= 0) {
        /* A round ends with the ACK of windowEnd; the next one begins. */
        if (t->hs_round_open && t->hs_phase == HS_PHASE_CSS &&
            ++t->hs_css_rounds >= HS_CSS_ROUNDS) {
            hystart_reset(t);
            t->ssthresh = t->cwnd; /* CSS_ROUNDS rounds in CSS: congestion avoidance */
            t->hs_exits++;
            return;
        }
        t->hs_round_open = 1;
        t->hs_window_end = t->snd_nxt;
        t->hs_last_round_min = t->hs_current_round_min;
        t->hs_current_round_min = INFINITY;
        t->hs_samples = 0;
        t->hs_round_start = t->hs_last_ack_at = now;
    }
    if (rtt < 0)
        return;
    if (rtt < t->hs_delay_min)
        t->hs_delay_min = rtt;
    if (t->cwnd >= HS_ACK_TRAIN_LOW_WINDOW * t->smss &&
        now - t->hs_last_ack_at <= HS_ACK_TRAIN_DELTA) {
        /* The ACK train goes on; past half the smallest RTT, slow start ends. */
        t->hs_last_ack_at = now;
        if (now - t->hs_round_start > t->hs_delay_min / 2) {
            hystart_reset(t);
            t->ssthresh = t->cwnd;
            t->hs_train_exits++;
            return;
        }
    }
    if (rtt < t->hs_current_round_min)
        t->hs_current_round_min = rtt;
    if (++t->hs_samples < HS_N_RTT_SAMPLE)
        return;
    if (t->hs_phase != HS_PHASE_CSS) {
        double last = t->hs_last_round_min;
        if (isinf(last))
            return;
        double thresh = fmax(HS_MIN_RTT_THRESH,
                             fmin(last / HS_MIN_RTT_DIVISOR, HS_MAX_RTT_THRESH));
        if (t->hs_current_round_min >= last + thresh) {
            t->hs_css_baseline = t->hs_current_round_min;
            t->hs_phase = HS_PHASE_CSS;
            t->hs_css_rounds = 0;
            t->hs_css_entered++;
        }
    } else if (t->hs_current_round_min < t->hs_css_baseline) {
        /* The delay fell back: jitter; slow start resumes. */
        t->hs_css_baseline = INFINITY;
        t->hs_phase = 0;
        t->hs_css_abandoned++;
    }
}

/* CongestionControl.on_idle: RFC 5681 §4.1 restart window, RFC 2861 ssthresh. */
static void cc_on_idle(struct dp_tcb *t)
{
    t->ssthresh = umax(t->ssthresh, (uint32_t)((3ull * t->cwnd) / 4));
    t->cwnd = umin(t->cc_iw, t->cwnd);
    t->reno_bytes_acked = 0;
    t->cubic_epoch_start = -1;
    t->cubic_carry = 0;
    hystart_reset(t); /* RFC 9406 §4.3: a new slow start */
}

static inline uint32_t ts_clock(const struct dp_tcb *t, double now)
{
    /* options.ts_clock: 1 ms ticks plus the connection's offset (RFC 7323 §5.4). */
    return (uint32_t)((int64_t)(now * 1000.0) + t->ts_offset);
}

/* --- output -------------------------------------------------------------------------- */

/* TcpConnection._advertise_window: receiver SWS avoidance, right edge never left. */
static uint16_t advertise_window(struct flow *f)
{
    struct dp_tcb *t = &f->t;
    uint32_t shift = t->rcv_shift;
    uint32_t window = t->rcv_cap > f->rcv.len ? t->rcv_cap - f->rcv.len : 0;
    uint32_t avail = umin(window, 0xFFFFu << shift);
    int32_t cur = sdiff(t->rcv_adv, t->rcv_nxt);
    uint32_t current = cur > 0 ? (uint32_t)cur : 0;
    uint32_t threshold = umin(t->rcv_cap / 2, t->rcv_mss);
    uint32_t wnd = (avail >= current && avail - current >= threshold) ? avail
                                                                      : umin(current, avail);
    uint32_t field = wnd >> shift;
    if ((field << shift) < current) {
        uint32_t up = (current + (1u << shift) - 1) >> shift;
        if ((uint64_t)up << shift <= (uint64_t)window + t->rcv_slack)
            field = up;
    }
    field = umin(field, 0xFFFF);
    uint32_t edge = t->rcv_nxt + (field << shift);
    if (sdiff(edge, t->rcv_adv) > 0)
        t->rcv_adv = edge;
    return (uint16_t)field;
}

/* Offer the arena's frames to the NIC without waiting; the ones it did not take stay,
 * in order, at the front (their slots swap places with the sent ones'). */
static void arena_flush(struct dp *dp)
{
    if (dp->arena_used == 0)
        return;
    struct dp_port *p = &dp->ports[0];
    uint32_t used = dp->arena_used;
    int sent = ((tx_copy_fn)p->tx_copy)(p->ctx, p->umem, p->tx_offset, dp->arena,
                                        dp->arena_offs, dp->arena_lens, used, DP_TX_NOWAIT);
    uint32_t ok = sent > 0 ? umin((uint32_t)sent, used) : 0;
    if (dp->cap)
        cap_frames(dp->cap, dp->arena, dp->arena_offs, dp->arena_lens, ok);
    dp->st.tx_frames += ok;
    dp->kick_owed = 1;
    uint64_t placed = p->tx_placed ? *p->tx_placed : 0;
    for (uint32_t k = 0; k < ok; k++) {
        uint32_t tag = dp->arena_flow[k];
        struct flow *f = &dp->flows[tag & ~ARENA_DATA];
        f->in_arena--;
        if (tag & ARENA_DATA)
            f->data_in_arena--;
        f->xsk_mark = placed;
    }
    uint32_t left = used - ok;
    if (ok > 0 && left > 0) {
        for (uint32_t k = 0; k < left; k++) { /* a rotation left by ok, in swaps */
            uint32_t a = k, b = ok + k;
            uint64_t off = dp->arena_offs[a];
            uint32_t cap = dp->arena_caps[a];
            dp->arena_offs[a] = dp->arena_offs[b];
            dp->arena_caps[a] = dp->arena_caps[b];
            dp->arena_lens[a] = dp->arena_lens[b];
            dp->arena_flow[a] = dp->arena_flow[b];
            dp->arena_offs[b] = off;
            dp->arena_caps[b] = cap;
        }
    }
    dp->st.tx_deferred += left;
    dp->arena_used = left;
}

/* The arena's slots data segments may use: the rest is arena_reserve's. */
static inline uint32_t data_slots(const struct dp *dp)
{
    return dp->arena_slots - dp->arena_reserve;
}

/* Whether one more frame fits in the arena, below `limit` slots: a full arena is
 * flushed once a round (after a flush that left it full the NIC is full: the next
 * round tries again). */
static int arena_room(struct dp *dp, uint32_t limit)
{
    if (dp->arena_used < limit)
        return 1;
    if (!dp->tx_full) {
        arena_flush(dp);
        if (dp->arena_used < limit)
            return 1;
        dp->tx_full = 1;
    }
    return 0;
}

/* Put segment s of f into the arena, its payload n bytes of the send ring from off;
 * the caller made sure of the room (arena_room). 1, or 0 when it cannot be built
 * (counted). */
static int arena_put(struct dp *dp, struct flow *f, struct wire_seg *s, uint32_t off,
                     uint32_t n)
{
    uint32_t k = dp->arena_used;
    s->ip_id = ++dp->ip_id;
    s->payload_len = n;
    uint8_t *frame = dp->arena + dp->arena_offs[k];
    uint32_t hdr = wire_header_len(&f->tmpl, s);
    if (hdr + n > dp->arena_caps[k]) {
        dp->st.tx_dropped++; /* cannot happen: smss fits the MTU (checked at adopt) */
        return 0;
    }
    if (n)
        ring_copy(&f->snd, off, frame + hdr, n);
    if (wire_build_batch(&f->tmpl, s, 1, NULL, dp->arena, &dp->arena_offs[k],
                         &dp->arena_caps[k], &dp->arena_lens[k]) != 1) {
        dp->st.tx_dropped++;
        return 0;
    }
    dp->arena_flow[k] = (uint32_t)(f - dp->flows) | (n ? ARENA_DATA : 0);
    f->in_arena++;
    if (n)
        f->data_in_arena++;
    dp->arena_used++;
    return 1;
}

/* A control segment (no data to wait with): the reserved slots too; when even they
 * are full the segment is dropped and counted (its timer or the peer repeats it). */
static int arena_put_control(struct dp *dp, struct flow *f, struct wire_seg *s)
{
    if (!arena_room(dp, dp->arena_slots)) {
        dp->st.tx_dropped++;
        return 0;
    }
    return arena_put(dp, f, s, 0, 0);
}

/* f waits for room in the NIC: the next round with room runs its output again. */
static void tx_wait(struct dp *dp, struct flow *f)
{
    if (f->tx_waiting)
        return;
    f->tx_waiting = 1;
    uint32_t tail = (dp->tx_wait_head + dp->n_tx_wait) % dp->cfg.max_flows;
    dp->tx_wait[tail] = (uint32_t)(f - dp->flows);
    dp->n_tx_wait++;
    dp->st.tx_waits++;
}

/* TcpConnection._sack_room: the SACK blocks a segment carries while out-of-order data
 * is held (RFC 2018 §3: three beside the timestamp option, four without). C never owes
 * a D-SACK: duplicates are Python's. */
static inline uint32_t sack_room(const struct dp_tcb *t)
{
    return t->sack_ok && t->ooo_count ? (t->ts_ok ? 3u : 4u) : 0u;
}

/* TcpConnection._data_mss: SMSS less the room SACK blocks may take (RFC 9293 §3.7.1),
 * so that no data segment that carries them outgrows the MTU. */
static inline uint32_t data_mss(const struct dp_tcb *t)
{
    uint32_t room = sack_room(t);
    uint32_t less = room ? 4 + 8 * room : 0;
    return t->smss > less ? t->smss - less : 1;
}

/* TcpConnection._sack_option without a D-SACK (Reassembler.sack_blocks): the held
 * ranges, most recently changed first (RFC 2018 §4), as many as fit. */
static void sack_fill(const struct dp_tcb *t, struct wire_seg *s)
{
    uint32_t room = umin(sack_room(t), t->ooo_count);
    uint32_t taken = 0; /* bit i: ooo[i] is listed (DP_OOO_RANGES <= 32) */
    for (uint32_t k = 0; k < room; k++) {
        uint32_t best = 0, found = 0;
        for (uint32_t i = 0; i < t->ooo_count; i++)
            if (!(taken & (1u << i)) && (!found || t->ooo[i].stamp > t->ooo[best].stamp)) {
                best = i;
                found = 1;
            }
        taken |= 1u << best;
        s->sack[2 * k] = t->ooo[best].start;
        s->sack[2 * k + 1] = t->ooo[best].end;
    }
    s->sack_count = (uint8_t)room;
}

/* Build one segment of f into the arena: payload bytes [off, off + n) of the send ring.
 * TcpConnection._segment: every segment carries the ACK of RCV.NXT and the window.
 * 0 when the NIC is full: nothing changed, the caller waits (tx_wait). */
static int emit(struct dp *dp, struct flow *f, double now, uint32_t seq, uint32_t off,
                uint32_t n, uint8_t flags)
{
    /* Data waits below the reserve; a pure ACK may use it. */
    if (!arena_room(dp, n ? data_slots(dp) : dp->arena_slots))
        return 0;
    struct dp_tcb *t = &f->t;
    struct wire_seg s;
    memset(&s, 0, sizeof s);
    s.seq = seq;
    s.window = advertise_window(f);
    s.flags = flags;
    if (t->ts_ok) {
        s.has_ts = 1;
        s.tsval = ts_clock(t, now);
        s.tsecr = t->ts_recent;
    }
    sack_fill(t, &s);
    s.ack = t->rcv_nxt;
    if (!arena_put(dp, f, &s, off, n))
        return 0;
    t->last_ack_sent = t->rcv_nxt;
    t->last_ack_rcv_nxt = t->rcv_nxt;
    t->ack_now = 0;
    t->ack_immediate = 0;
    t->delack_at = 0;
    t->segs_out++;
    t->last_send = now;
    if (n) {
        dp->st.tx_data_segs++;
        t->bytes_out += n;
    } else {
        dp->st.tx_acks++;
    }
    return 1;
}

/* TcpConnection._segment with syn_options, in SYN-RECEIVED: the SYN-ACK answers only
 * what the peer's SYN offered (options.syn_options); its window is never scaled
 * (RFC 7323 §2.2). */
static void emit_synack(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    struct wire_seg s;
    memset(&s, 0, sizeof s);
    uint32_t window = umin(t->rcv_cap - f->rcv.len, 0xFFFF);
    if (sdiff(t->rcv_nxt + window, t->rcv_adv) > 0)
        t->rcv_adv = t->rcv_nxt + window;
    s.seq = t->iss;
    s.ack = t->rcv_nxt;
    s.flags = TCP_SYN | TCP_ACK;
    s.window = (uint16_t)window;
    s.syn_opts = WIRE_SYN_MSS | (t->sack_ok ? WIRE_SYN_SACK_PERM : 0) |
                 (t->ws_ok ? WIRE_SYN_WSCALE : 0);
    s.mss = (uint16_t)t->cfg_mss;
    s.wscale = t->rcv_shift;
    if (t->ts_ok) {
        s.has_ts = 1;
        s.tsval = ts_clock(t, now);
        s.tsecr = t->ts_recent;
    }
    t->last_ack_sent = t->last_ack_rcv_nxt = t->rcv_nxt;
    t->ack_now = 0;
    t->delack_at = 0;
    if (arena_put_control(dp, f, &s)) {
        t->segs_out++;
        t->last_send = now;
    }
}

/* TcpConnection._rst_seq: <SEQ=seq><CTL=RST>, no ACK, no options. */
static void emit_rst(struct dp *dp, struct flow *f, uint32_t seq)
{
    struct wire_seg s;
    memset(&s, 0, sizeof s);
    s.seq = seq;
    s.flags = TCP_RST;
    if (arena_put_control(dp, f, &s))
        f->t.segs_out++;
}

/* Bytes of the send ring sent and not yet acknowledged: our FIN, when sent and not
 * acknowledged, is the last sequence number in flight and no byte of the ring. */
static inline uint32_t data_in_flight(const struct dp_tcb *t)
{
    uint32_t flight = t->snd_nxt - t->snd_una;
    return flight && t->fin_sent ? flight - 1 : flight;
}

/* TcpConnection.small_segment_allowed, for a C flow (SND.NXT == SND.MAX): Nagle lets
 * the last bytes go when a FIN follows them. */
static int small_segment_allowed(const struct dp_tcb *t, uint32_t seq, uint32_t n,
                                 uint32_t avail)
{
    return (n == avail && (t->nodelay || seq == t->snd_una || t->fin_queued)) ||
           (t->max_snd_wnd && n >= t->max_snd_wnd / 2);
}

/* Our FIN is queued behind the send ring's bytes and may go (TcpConnection's
 * _fin_allowed): the application shut down writing, and the state says so. */
static int fin_due(const struct dp_tcb *t)
{
    return t->fin_queued && !t->fin_sent &&
           (t->tcp_state == DP_FIN_WAIT_1 || t->tcp_state == DP_CLOSING ||
            t->tcp_state == DP_LAST_ACK);
}

/* TcpConnection._grow_send_buffer: two congestion windows, up to snd_cap_max. */
static void grow_send_buffer(struct flow *f)
{
    struct dp_tcb *t = &f->t;
    uint64_t want = 2ull * t->cwnd;
    if (want > t->snd_cap_max)
        want = t->snd_cap_max;
    if (want > t->snd_cap) {
        t->snd_cap = (uint32_t)want;
        /* The ring grows on demand, up to it; a borrowed one is the channel's tx. */
        f->snd.cap = f->snd.borrowed ? umin(t->snd_cap, f->snd.size) : t->snd_cap;
    }
}

/* TcpConnection._note_cwnd_use: the most in flight this window of data. */
static void note_cwnd_use(struct dp_tcb *t)
{
    uint32_t flight = t->snd_nxt - t->snd_una;
    if (sdiff(t->snd_una, t->cwnd_use_end) >= 0 || flight > t->cwnd_use_max) {
        t->cwnd_use_max = flight;
        t->cwnd_use_end = t->snd_nxt;
    }
}

/* --- GSO: a run of data segments as one super-segment (dp_set_gso) ----------------- */

/* The most payload one super-segment carries: its IPv4 total length (IPv6 payload
 * length) must fit 16 bits with the largest IP and TCP headers. */
#define GSO_MAX_PAYLOAD (65535u - 20u - 60u)

/* Whether f's data may start going by GSO: on, no capture, and every frame of f sent
 * by AF_XDP (and of Python's, which may be f's) completed. The two paths are separate
 * queues to the device (the qdisc, another tx queue); a segment sent by one while an
 * earlier one still waits in the other would arrive out of order, and the peer would
 * take it for loss. A completion means the frame is sent (copy mode: its skb freed;
 * zero copy: the NIC done with it), not merely taken from the ring. */
static int gso_ready(struct dp *dp, struct flow *f)
{
    if (dp->gso_fd < 0 || dp->cap != NULL || f->in_arena)
        return 0;
    uint64_t need = f->xsk_mark > dp->py_mark ? f->xsk_mark : dp->py_mark;
    if (need == 0)
        return 1;
    struct dp_port *p = &dp->ports[0];
    if (p->tx_completed == NULL)
        return 0;
    if (*p->tx_completed < need && p->complete) /* reap what came back (no system call) */
        ((complete_fn)p->complete)(p->ctx, 1u << 20);
    return *p->tx_completed >= need;
}

/* The most segments one super-segment carries: Linux's TSO autosizing
 * (tcp_tso_autosize): about a millisecond at the pacing rate Linux would use (cwnd per
 * SRTT, twice that in slow start, 1.2 times after), plus a bonus that gives a path of
 * under half a millisecond the whole 64 KiB, and at least two. On a long path a burst
 * of 64 KiB at once is what a bottleneck's queue drops; the kernel's TCP never sends
 * one there either. */
static uint32_t gso_autosize(const struct dp_tcb *t, uint32_t mss)
{
    uint32_t most = GSO_MAX_PAYLOAD / mss;
    if (t->srtt <= 0)
        return 2;
    double factor = t->cwnd < t->ssthresh ? 2.0 : 1.2; /* tcp_update_pacing_rate */
    double bytes = factor * t->cwnd / t->srtt / 1024.0;  /* >> sk_pacing_shift (10) */
    uint64_t r = (uint64_t)(t->srtt * 1e6) >> 9;         /* tcp_tso_rtt_log */
    if (r < 32)
        bytes += (double)(65536u >> r);
    double segs = bytes / mss;
    return segs >= most ? most : (segs < 2 ? 2 : (uint32_t)segs);
}

/* How many bytes from SND.NXT one super-segment takes: whole segments of mss bytes
 * while the window (usable), the bytes (unsent), the round's quantum (segs) and the
 * autosizing allow, then a last short one where a single segment would be allowed it
 * (Nagle, small_segment_allowed). */
static uint32_t gso_run(const struct dp_tcb *t, uint32_t mss, uint32_t unsent,
                        uint32_t usable, uint32_t segs)
{
    uint32_t room = umin(unsent, usable);
    uint32_t max_segs = umin(segs, gso_autosize(t, mss));
    uint32_t full = umin(room / mss, max_segs);
    uint32_t total = full * mss;
    uint32_t rest = room - total;
    if (full < max_segs && rest > 0 && rest < mss &&
        small_segment_allowed(t, t->snd_nxt + total, rest, unsent - total))
        total += rest;
    return total;
}

/* Send bytes [off, off + total) of the send ring from seq as one super-segment of segs
 * segments of mss bytes: emit's bookkeeping, for each of them. 1 sent; 0 not (the socket was full or
 * refused it; on an error that will not pass, GSO goes off): nothing changed. */
static int emit_gso(struct dp *dp, struct flow *f, double now, uint32_t seq, uint32_t off,
                    uint32_t total, uint32_t segs, uint32_t mss, uint8_t flags)
{
    struct dp_tcb *t = &f->t;
    struct wire_seg s;
    memset(&s, 0, sizeof s);
    s.seq = seq;
    s.flags = flags;
    s.ack = t->rcv_nxt;
    s.payload_len = total;
    s.ip_id = (uint16_t)(dp->ip_id + 1); /* the kernel numbers the rest on from it */
    if (t->ts_ok) {
        s.has_ts = 1;
        s.tsval = ts_clock(t, now);
        s.tsecr = t->ts_recent;
    }
    sack_fill(t, &s);
    uint32_t rcv_adv = t->rcv_adv; /* advertise_window moves it: back if nothing went */
    s.window = advertise_window(f);
    uint8_t hdr[128];
    struct wire_vnet_hdr vnet;
    uint32_t hl = wire_build_gso(&f->tmpl, &s, (uint16_t)mss, hdr, sizeof hdr, &vnet);
    if (hl == 0) {
        t->rcv_adv = rcv_adv;
        dp->st.gso_fallbacks++;
        return 0;
    }
    struct iovec iov[4] = {{&vnet, sizeof vnet}, {hdr, hl}};
    int spans = ring_span_iov(&f->snd, off, total, &iov[2]);
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)(2 + spans);
    ssize_t rc = sendmsg(dp->gso_fd, &msg, MSG_DONTWAIT);
    if (rc < 0) {
        int e = errno;
        t->rcv_adv = rcv_adv;
        dp->st.gso_fallbacks++;
        /* Errors that will not pass: the socket or the device cannot do this. The rest
         * (EAGAIN, ENOBUFS, ENOMEM, ENETDOWN: a full socket or queue, a failed
         * allocation, a stopped queue) are tried again. */
        if (e == EINVAL || e == EMSGSIZE || e == ENXIO || e == EOPNOTSUPP || e == EFAULT ||
            e == EPERM || e == EBADF || e == ENOTSOCK)
            dp->gso_fd = -1;
        return 0;
    }
    dp->ip_id = (uint16_t)(dp->ip_id + segs);
    t->last_ack_sent = t->rcv_nxt;
    t->last_ack_rcv_nxt = t->rcv_nxt;
    t->ack_now = 0;
    t->ack_immediate = 0;
    t->delack_at = 0;
    t->segs_out += segs;
    t->last_send = now;
    t->bytes_out += total;
    dp->st.tx_data_segs += segs;
    dp->st.tx_frames += segs;
    dp->st.gso_sends++;
    dp->st.gso_segs += segs;
    f->gso_sticky = 1;
    return 1;
}

/* TcpConnection._transmit for an established connection outside recovery. */
static void flow_output(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    uint32_t sent_before = (uint32_t)t->segs_out;
    if (t->tcp_state == DP_SYN_SENT)
        return; /* _transmit in SYN-SENT: the SYN only (emit_syn), no ACK, no data */
    if (t->tcp_state == DP_TIME_WAIT || t->tcp_state == DP_CLOSED ||
        t->tcp_state == DP_SYN_RECEIVED) {
        /* TcpConnection._transmit in these states: only the ACK it owes (of the FIN in
         * TIME-WAIT; a challenge or duplicate ACK in SYN-RECEIVED). */
        if (t->ack_now && !emit(dp, f, now, t->snd_nxt, 0, 0, TCP_ACK))
            tx_wait(dp, f);
        return;
    }
    uint32_t nxt_before = t->snd_nxt;
    uint32_t mss = data_mss(t); /* SMSS, less the SACK blocks' room while data is held */
    /* While other flows wait for the NIC, a quantum a round, then back of the line. */
    uint32_t quantum = dp->n_tx_wait ? TX_QUANTUM : UINT32_MAX;
    uint32_t in_flight = data_in_flight(t);
    uint32_t unsent = f->snd.len - in_flight;
    /* RFC 5681 §4.1: restart from the restart window after an idle RTO. */
    if (in_flight == 0 && f->snd.len > 0 && now - t->last_send > rto_of(t))
        cc_on_idle(t);
    /* A flow that has sent by GSO sends all its data so (its frames may still wait in
     * the qdisc, which AF_XDP's would overtake); another starts when it has a run. */
    int gso = f->gso_sticky ? dp->gso_fd >= 0 && !dp->cap
                            : unsent > mss && gso_ready(dp, f);
    while (unsent > 0) {
        /* RFC 3042: limited transmit lets cwnd be exceeded by up to 2 SMSS. */
        uint64_t cwnd = (uint64_t)t->cwnd + lt_allowance(t);
        uint32_t wnd = cwnd < t->snd_wnd ? (uint32_t)cwnd : t->snd_wnd;
        int32_t usable = sdiff(t->snd_una + wnd, t->snd_nxt);
        if (usable <= 0)
            break;
        uint32_t n = umin(umin(unsent, mss), (uint32_t)usable);
        if (n < mss && !small_segment_allowed(t, t->snd_nxt, n, unsent))
            break;
        if (quantum-- == 0) {
            tx_wait(dp, f); /* more may go: after the flows that wait */
            break;
        }
        uint32_t off = t->snd_nxt - t->snd_una;
        if (gso && (n == mss || f->gso_sticky)) {
            /* The segments this loop would build one by one, from here, as one. */
            uint32_t allowed = quantum == UINT32_MAX - 1 ? UINT32_MAX : quantum + 1;
            uint32_t total = n < mss ? n : gso_run(t, mss, unsent, (uint32_t)usable, allowed);
            if (total > n || f->gso_sticky) {
                uint32_t segs = (total + mss - 1) / mss;
                uint32_t last = off + total == f->snd.len;
                uint32_t fin = last && fin_due(t);
                uint8_t flags = TCP_ACK | (last ? TCP_PSH : 0) | (fin ? TCP_FIN : 0);
                if (emit_gso(dp, f, now, t->snd_nxt, off, total, segs, mss, flags)) {
                    if (!t->rtt_timing) { /* Karn: time its first segment */
                        t->rtt_timing = 1;
                        t->rtt_seq = t->snd_nxt + n;
                        t->rtt_time = now;
                    }
                    t->snd_nxt += total + fin;
                    tx_note(t, t->snd_nxt - fin, now);
                    if (t->dupacks) { /* LossRecovery.new_data_sent */
                        t->lt_bytes += total;
                        t->lt_segs += segs;
                    }
                    unsent -= total;
                    quantum = allowed == UINT32_MAX ? UINT32_MAX : allowed - segs;
                    if (fin) {
                        t->fin_sent = 1;
                        dp->st.fins_sent++;
                    }
                    continue;
                }
                if (f->gso_sticky && dp->gso_fd >= 0) {
                    tx_wait(dp, f); /* the socket is full: again next round, same path */
                    break;
                }
                gso = 0; /* refused: this round's rest as single frames */
            }
        }
        uint32_t last = off + n == f->snd.len;
        /* TcpConnection._emit_data: the FIN rides on the segment whose end it follows. */
        uint32_t fin = last && fin_due(t);
        uint8_t flags = TCP_ACK | (last ? TCP_PSH : 0) | (fin ? TCP_FIN : 0);
        if (!emit(dp, f, now, t->snd_nxt, off, n, flags)) {
            tx_wait(dp, f); /* the NIC is full: the rest goes in a later round */
            break;
        }
        if (!t->rtt_timing) { /* Karn (RFC 6298 §3): time one new segment at once */
            t->rtt_timing = 1;
            t->rtt_seq = t->snd_nxt + n;
            t->rtt_time = now;
        }
        t->snd_nxt += n + fin;
        tx_note(t, t->snd_nxt - fin, now);
        if (t->dupacks) { /* LossRecovery.new_data_sent: limited transmit's */
            t->lt_bytes += n;
            t->lt_segs++;
        }
        unsent -= n;
        if (fin) {
            t->fin_sent = 1;
            dp->st.fins_sent++;
        }
    }
    if (unsent == 0 && fin_due(t)) {
        /* TcpConnection._send_fin: nothing left to carry it, in its own segment. */
        if (emit(dp, f, now, t->snd_nxt, 0, 0, TCP_FIN | TCP_ACK)) {
            t->snd_nxt++;
            t->fin_sent = 1;
            dp->st.fins_sent++;
        } else {
            tx_wait(dp, f);
        }
    }
    if (t->snd_nxt != t->snd_una && t->rto_at == 0) {
        t->rto_at = now + rto_of(t);
        timer_arm(dp, f, t->rto_at);
    }
    if (t->snd_nxt != nxt_before) {
        pto_arm(dp, f, now); /* RFC 8985 §7.2: new data sent */
        note_cwnd_use(t);
    }
    if (unsent > 0 && t->snd_nxt == t->snd_una && !f->tx_waiting) {
        /* Nothing in flight and nothing may go: the persist timer's case (§3.8.6.1). */
        hand_back(dp, f, DP_REASON_PERSIST);
        return;
    }
    if (t->ack_now && (uint32_t)t->segs_out == sent_before &&
        !emit(dp, f, now, t->snd_nxt, 0, 0, TCP_ACK))
        tx_wait(dp, f);
    if (t->delack_at)
        timer_arm(dp, f, t->delack_at);
}

/* --- input --------------------------------------------------------------------------- */

/* --- the close of a flow born in C (RFC 9293 §3.10.4, §3.10.7.4, §3.6) ------------ */

/* Whether a TIME-WAIT FIFO entry still names a TIME-WAIT record C holds (not one that
 * expired, was taken over or reopened, or whose slot a new flow took). */
static int tw_entry_live(struct dp *dp, int64_t h)
{
    const struct flow *f = flow_of(dp, h);
    return f != NULL && f->state == FLOW_C && f->t.tcp_state == DP_TIME_WAIT;
}

/* Queue f's record in the TIME-WAIT FIFO, the order flow_slot gives records up in.
 * Most records end on their own, and their entries stay until they reach the head: the
 * FIFO holds max_flows entries and saw far more records than that under any connection
 * rate, so it wrapped onto its own head and a full table gave up whichever record was
 * written there last. Ended entries at the head go first; if the FIFO is still full,
 * every ended entry goes (at most max_flows - 1 records besides f are live). */
static void tw_push(struct dp *dp, struct flow *f)
{
    uint32_t cap = dp->cfg.max_flows;
    while (dp->tw_count && !tw_entry_live(dp, dp->tw_fifo[dp->tw_head])) {
        dp->tw_head = (dp->tw_head + 1) % cap;
        dp->tw_count--;
    }
    if (dp->tw_count == cap) {
        uint32_t kept = 0;
        for (uint32_t i = 0; i < dp->tw_count; i++) {
            int64_t h = dp->tw_fifo[(dp->tw_head + i) % cap];
            if (tw_entry_live(dp, h))
                dp->tw_fifo[(dp->tw_head + kept++) % cap] = h;
        }
        dp->tw_count = kept;
    }
    if (dp->tw_count == cap) {
        /* Only when a record reopened in place came back to TIME-WAIT under the same
         * handle (two entries): its older one goes. */
        dp->tw_head = (dp->tw_head + 1) % cap;
        dp->tw_count--;
    }
    dp->tw_fifo[(dp->tw_head + dp->tw_count++) % cap] = handle_of(dp, f);
}

/* TcpConnection._enter_time_wait: every timer but 2*MSL's goes. The flow stays in the
 * table as the TIME-WAIT record (tcp/timewait.py's rules, tw_input). */
static void enter_time_wait(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    t->tcp_state = DP_TIME_WAIT;
    dp->st.born_live--;
    dp->st.time_wait_live++;
    t->rto_at = t->keepalive_at = 0;
    t->delack_at = 0;
    t->state_at = now + t->time_wait_len;
    timer_arm(dp, f, t->state_at);
    f->tw_last_oow = -INFINITY;
    tw_push(dp, f);
    dp->st.time_waits++;
    /* The record needs no buffers: our data and FIN are acknowledged, and the peer sends
     * nothing more. Kept, they drained the pool under a connection rate (a few hundred
     * records outlive their connections), and each connection paid malloc and free for
     * two rings (2% of the machine's CPU, perf 2026-12-06). Bytes the application has
     * not read yet stay. */
    ring_release(&dp->pool, &f->snd);
    ring_release(&dp->pool, &f->rcv);
}

/* TcpConnection._ack_state_transitions: our FIN is acknowledged. */
static void fin_acked(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    if (t->tcp_state == DP_FIN_WAIT_1) {
        t->tcp_state = DP_FIN_WAIT_2;
        t->rto_at = 0;
        if (t->app_fd < 0) { /* the application let go: the FIN-WAIT-2 timer (close()) */
            t->state_at = now + t->fin_wait2_len;
            timer_arm(dp, f, t->state_at);
        }
    } else if (t->tcp_state == DP_CLOSING) {
        enter_time_wait(dp, f, now);
    } else if (t->tcp_state == DP_LAST_ACK) {
        t->tcp_state = DP_CLOSED;
        t->rto_at = 0;
    }
}

/* TcpConnection._maybe_fin: the peer's FIN, in order (RFC 9293 §3.10.7.4 eighth). */
static void fin_received(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    t->rcv_nxt++;
    t->ack_now = 1;
    t->peer_fin = 1;
    dp->st.fins_received++;
    if (t->tcp_state == DP_ESTABLISHED)
        t->tcp_state = DP_CLOSE_WAIT;
    else if (t->tcp_state == DP_FIN_WAIT_1)
        t->tcp_state = DP_CLOSING; /* our FIN is not acknowledged: simultaneous close */
    else if (t->tcp_state == DP_FIN_WAIT_2)
        enter_time_wait(dp, f, now);
}

/* A flow born in C ends without Python ever having had it: its TCB's counters join
 * dp->ended (a flow Python held had them added to its connection at hand-back, and an
 * adopted one counts only since its adoption, also added at hand-back). */
static void count_ended(struct dp *dp, const struct flow *f)
{
    const struct dp_tcb *t = &f->t;
    if (!t->born)
        return;
    struct dp_counts *c = &dp->ended;
    c->segs_in += t->segs_in;
    c->segs_out += t->segs_out;
    c->bytes_acked += t->bytes_acked;
    c->ooo_segs += t->ooo_segs;
    c->paws_drops += t->paws_drops;
    c->lt_segs += t->lt_segs;
    c->hs_css_entered += t->hs_css_entered;
    c->hs_css_abandoned += t->hs_css_abandoned;
    c->hs_exits += t->hs_exits;
    c->hs_train_exits += t->hs_train_exits;
}

/* A born flow after its round: Pump.finished's rule (the application said EOF and was
 * shown the peer's) closes the application's end, as TcpConnection.close; a flow
 * done with TCP and with its application leaves the table. */
static void born_settle(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    if (f->state != FLOW_C || !t->born)
        return;
    if (t->app_fd >= 0 && t->app_eof && t->fin_to_app && f->rcv.len == 0 &&
        snd_unborrow(dp, f) == 0) { /* what is still to send outlives the channel */
        app_fd_close(f);
        dp_chan_release(dp, t->chan);
        t->chan = 0;
        dp_chan_release(dp, t->revert_chan);
        t->revert_chan = 0;
        if (t->tcp_state == DP_FIN_WAIT_2 && t->state_at == 0) {
            t->state_at = now + t->fin_wait2_len;
            timer_arm(dp, f, t->state_at);
        }
    }
    if (t->app_fd >= 0)
        return;
    if (t->tcp_state == DP_TIME_WAIT) {
        /* TcpConnection.time_wait_record: the window the record advertises. */
        int32_t wnd = sdiff(t->rcv_adv, t->rcv_nxt);
        f->tw_window = (uint16_t)umin((wnd > 0 ? (uint32_t)wnd : 0) >> t->rcv_shift, 0xFFFF);
    } else if (t->tcp_state == DP_CLOSED) {
        count_ended(dp, f);
        flow_forget(dp, f);
        dp->st.closed++;
    }
}

/* A born flow ends: its application end, if still open, closes with it. */
static void claim_refuse_unread(struct dp *dp, struct flow *f);

static void born_end(struct dp *dp, struct flow *f)
{
    count_ended(dp, f);
    if (f->t.claim_check && f->t.app_fd >= 0)
        claim_refuse_unread(dp, f);
    snd_drop_borrowed(dp, f); /* before app_fd_close: a waiting writer's filler */
    if (f->t.app_fd >= 0)
        app_fd_close(f);
    dp_chan_release(dp, f->t.chan);
    f->t.chan = 0;
    dp_chan_release(dp, f->t.revert_chan);
    f->t.revert_chan = 0;
    flow_forget(dp, f);
}

/* --- out-of-order data (Reassembler, in the receive ring) ---------------------------- */

/* Whether C holds a segment of n bytes at seq, above RCV.NXT, as Reassembler.insert
 * would: the case it takes is the common one, a segment wholly inside the window that
 * touches no held byte (an overlap is a duplicate, whose D-SACK, RFC 2883 §4, is
 * Python's), with at most DP_OOO_RANGES ranges after it. On 1 the ring has room for it
 * at its offset; 0: Python's. */
static int ooo_fits(struct dp *dp, struct flow *f, uint32_t seq, uint32_t n)
{
    const struct dp_tcb *t = &f->t;
    uint32_t end = seq + n;
    int joins = 0;
    for (uint32_t i = 0; i < t->ooo_count; i++) {
        const struct dp_ooo *r = &t->ooo[i];
        if (sdiff(seq, r->end) < 0 && sdiff(end, r->start) > 0)
            return 0;
        joins |= r->end == seq || r->start == end;
    }
    if (!joins && t->ooo_count >= DP_OOO_RANGES)
        return 0;
    uint32_t off = seq - t->rcv_nxt; /* past the in-order bytes */
    if ((uint64_t)f->rcv.len + off + n > f->rcv.cap)
        return 0;
    return ring_room(&dp->pool, &f->rcv, off + n) == 0;
}

/* The ring keeps the held ranges' region past its in-order bytes. */
static void ooo_hold(struct flow *f)
{
    const struct dp_tcb *t = &f->t;
    f->rcv.hold = t->ooo_count ? t->ooo[t->ooo_count - 1].end - t->rcv_nxt : 0;
}

/* Reassembler.insert of a segment ooo_fits took: its bytes at their offset, its range
 * coalesced with the ones it touches, stamped as the most recent (RFC 2018 §4). */
static void ooo_store(struct flow *f, uint32_t seq, const uint8_t *src, uint32_t n)
{
    struct dp_tcb *t = &f->t;
    ring_write_at(&f->rcv, seq - t->rcv_nxt, src, n);
    uint32_t end = seq + n, i = 0, count = t->ooo_count;
    while (i < count && sdiff(t->ooo[i].end, seq) < 0)
        i++;
    struct dp_ooo *r = &t->ooo[i];
    uint32_t stamp = ++t->ooo_clock;
    if (i < count && r->end == seq) { /* extends ooo[i], perhaps up to the next one */
        r->end = end;
        if (i + 1 < count && r[1].start == end) {
            r->end = r[1].end;
            memmove(&r[1], &r[2], (count - i - 2) * sizeof *r);
            count--;
        }
    } else if (i < count && r->start == end) { /* reaches down to ooo[i] */
        r->start = seq;
    } else { /* a range of its own, before ooo[i] */
        memmove(&r[1], &r[0], (count - i) * sizeof *r);
        r->start = seq;
        r->end = end;
        count++;
    }
    r->stamp = stamp;
    t->ooo_count = count;
    ooo_hold(f);
}

/* Reassembler.pop_ready: in-order bytes reached the first held range, whose bytes are
 * in place behind them: they are in order now. */
static void ooo_deliver(struct dp *dp, struct flow *f)
{
    struct dp_tcb *t = &f->t;
    if (t->ooo_count == 0 || t->rcv_nxt != t->ooo[0].start)
        return;
    f->rcv.len += t->ooo[0].end - t->ooo[0].start;
    t->rcv_nxt = t->ooo[0].end;
    t->ooo_count--;
    memmove(&t->ooo[0], &t->ooo[1], t->ooo_count * sizeof t->ooo[0]);
    ooo_hold(f);
    dp->st.ooo_filled++;
}

/* TcpConnection._ack_advanced's RTT sample for an ACK of new data: the timed segment
 * (Karn), or failing that the echoed timestamp; < 0: none. */
static double ack_rtt(const struct dp_tcb *t, const struct wire_parsed *p, double now)
{
    if (t->rtt_timing && sdiff(p->ack, t->rtt_seq) >= 0)
        return now - t->rtt_time;
    if (t->ts_ok && p->tsecr) {
        /* options.ts_rtt: an echo within the 1 ms tick counts as one tick. */
        uint32_t elapsed = ts_clock(t, now) - p->tsecr;
        if (elapsed < 0x80000000u)
            return (elapsed ? elapsed : 1) / 1000.0;
    }
    return -1;
}

/* Whether C predicts p for f (header prediction, Van Jacobson, plus window updates):
 * accepted segments change exactly what TcpConnection.receive would. */
static int flow_input(struct dp *dp, struct flow *f, const struct wire_parsed *p,
                      const uint8_t *frame, double now)
{
    struct dp_tcb *t = &f->t;
    uint32_t len = p->payload_len;
    /* A FIN in order is C's only on a flow born here (its application channel is C's);
     * a segment after the peer's FIN is Python's. */
    uint32_t fin = (p->flags & TCP_FIN) != 0;
    if (fin) {
        if (!t->born || !p->opts_plain || (p->flags & ~(TCP_PSH | TCP_FIN)) != TCP_ACK)
            return 0;
    } else if (!p->plain) {
        /* SACK blocks beside the timestamps: the sender's side of SACK (sack_ack). */
        if (!p->has_sack || !t->sack_ok || (p->flags & ~TCP_PSH) != TCP_ACK ||
            !opts_ts_sack_only(frame, p))
            return 0;
    }
    /* In order; or data above RCV.NXT, held until the hole fills (ooo_fits). A FIN
     * while data is held lies below held bytes: Python's. */
    int32_t ahead = sdiff(p->seq, t->rcv_nxt);
    if (ahead < 0 || (ahead > 0 && (len == 0 || fin)) || (fin && t->ooo_count) ||
        (t->peer_fin && (len || fin)))
        return 0;
    if (t->ts_ok) {
        /* A segment without TSopt goes to Python, which counts it. */
        if (!p->has_ts)
            return 0;
        if (sdiff(p->tsval, t->ts_recent) < 0) {
            /* RFC 7323 §5.3 R1 (PAWS): a pure ACK, typically one that a newer ACK
             * overtook, is dropped, counted and answered by an ACK. Data (whose
             * duplicate a D-SACK reports) and a TS.Recent gone stale (§5.5): Python's. */
            if (len || fin || now - t->ts_recent_age > PAWS_IDLE)
                return 0;
            t->paws_drops++;
            t->segs_in++;
            t->ack_now = 1;
            return 1;
        }
    } else if (p->has_ts) {
        return 0;
    }
    int32_t adv = sdiff(p->ack, t->snd_una);
    if (sdiff(p->ack, t->snd_nxt) > 0)
        return 0; /* unsent: RFC 5961 §5.2 in Python */
    /* An old ACK (a reordered one) within MAX.SND.WND is ignored, its segment taken
     * (RFC 9293 §3.10.7.4; RFC 5961 §5.2 for one older than that: Python's); its SACK
     * blocks still count (sack_ack), as in LossRecovery.on_ack. */
    if (adv < 0 && (uint32_t)-adv > umax(t->max_snd_wnd, 1))
        return 0;
    uint32_t wnd = (uint32_t)p->window << t->snd_shift;
    uint32_t flight = t->snd_nxt - t->snd_una;
    int dupack = adv == 0 && len == 0 && !fin && flight > 0 && wnd == t->snd_wnd;
    if (dupack && !t->sack_ok)
        return 0; /* NewReno's duplicate ACKs: recovery.py */
    /* The scoreboard this ACK leaves, tried before anything changes: a D-SACK (RFC
     * 2883; the evidence undo looks for) and a range beyond DP_SACK_RANGES are
     * Python's. */
    struct board nb = {0};
    int64_t sacked_new = 0;
    if (t->sack_ok) {
        struct sack_blocks blk;
        read_sack_blocks(frame, p, &blk);
        if (is_dsack(&blk, p->ack))
            return 0;
        nb.count = t->sacked_count;
        nb.bytes = t->sacked_bytes;
        memcpy(nb.r, t->sacked, t->sacked_count * sizeof nb.r[0]);
        sacked_new = board_update(&nb, adv > 0 ? p->ack : t->snd_una, t->snd_nxt, &blk);
        if (sacked_new < 0)
            return 0;
    }
    /* A segment with data on whose ACK recovery would begin is Python's, whole: the
     * retransmission goes before its text is taken (_receive_synchronized). Tried on a
     * copy (C takes a pure ACK and hands back after it: below). */
    if ((len || fin) && t->sack_ok &&
        (p->has_sack || t->sacked_count || t->dupacks || t->reordering_seen)) {
        struct dp_tcb s = *t;
        if (adv > 0) {
            double rtt = ack_rtt(&s, p, now);
            s.snd_una = p->ack;
            if (rtt >= 0)
                rtt_sample(&s, rtt);
        }
        if (sack_ack(&s, &nb, (uint32_t)sacked_new, adv, 0, s.undo_open && !s.undo_expired,
                     now))
            return 0;
    }
    if (len || fin) {
        if (sdiff(t->rcv_adv, p->seq) < (int32_t)(len + fin))
            return 0; /* beyond the window: trimming is Python's */
        if (ahead > 0) {
            if (!ooo_fits(dp, f, p->seq, len))
                return 0;
        } else if (f->rcv.cap - f->rcv.len < len || ring_room(&dp->pool, &f->rcv, len) < 0 ||
                   (t->ooo_count && sdiff(p->seq + len, t->ooo[0].start) > 0)) {
            return 0; /* no room; or it overlaps held bytes: a duplicate, Python's */
        }
    }
    /* Accepted. RFC 5681 §4.2 (TcpConnection._receive_synchronized): the ACK owed at
     * once for an earlier out-of-order or gap-filling segment goes before this one is
     * taken, as it stands, so that each such segment gets its own (a full arena leaves
     * it to this round's output). */
    if (t->ack_immediate && (len || fin))
        emit(dp, f, now, t->snd_nxt, 0, 0, TCP_ACK);
    /* RFC 7323 §4.3: TS.Recent from the segment covering Last.ACK.sent. */
    if (t->ts_ok && sdiff(p->seq, t->last_ack_sent) <= 0) {
        t->ts_recent = p->tsval;
        t->ts_recent_age = now;
    }
    if (adv > 0) {
        /* _advance_una and _ack_advanced (an acknowledged FIN is no byte of the ring). */
        uint32_t data_acked = umin((uint32_t)adv, f->snd.len);
        ring_consume(&f->snd, data_acked);
        if (f->snd.borrowed)
            snd_give_back(dp, f, data_acked, 0); /* the writer's room: acknowledged bytes */
        t->snd_una = p->ack;
        t->bytes_acked += data_acked;
        double rtt = ack_rtt(t, p, now);
        if (t->rtt_timing && sdiff(p->ack, t->rtt_seq) >= 0)
            t->rtt_timing = 0;
        if (rtt >= 0)
            rtt_sample(t, rtt);
        hystart_ack(t, rtt, now); /* before the window grows on it, as in Python */
        t->rto_backoff = 0;
        t->retries = 0;
        if (t->snd_una == t->snd_nxt) {
            t->rto_at = 0;
        } else {
            t->rto_at = now + rto_of(t); /* RFC 6298 §5.3 */
            timer_arm(dp, f, t->rto_at);
        }
        if (t->write_blocked && f->snd.len < t->snd_cap)
            t->write_blocked = 0;
        /* LossRecovery.on_ack outside recovery: RFC 7661 cwnd-limited test, on the
         * most this window used (TcpConnection._note_cwnd_use). */
        if (2ull * umax(flight, t->cwnd_use_max) >= t->cwnd)
            cc_on_ack(t, now, (uint32_t)adv);
        grow_send_buffer(f);
        if (t->fin_sent && t->snd_una == t->snd_nxt)
            fin_acked(dp, f, now);
    }
    /* Window update (RFC 9293 §3.10.7.4, SND.WL1/WL2), from an acceptable ACK only
     * (SND.UNA =< SEG.ACK). */
    if (adv >= 0 && (sdiff(t->snd_wl1, p->seq) < 0 ||
                     (t->snd_wl1 == p->seq && sdiff(t->snd_wl2, p->ack) <= 0))) {
        if (wnd > t->snd_wnd)
            t->persist_backoff = 0;
        t->snd_wnd = wnd;
        t->snd_wl1 = p->seq;
        t->snd_wl2 = p->ack;
        if (wnd > t->max_snd_wnd)
            t->max_snd_wnd = wnd;
    }
    /* LossRecovery.on_ack: the scoreboard, RACK, duplicate ACKs; whether recovery is
     * due (the flow goes to Python below, once this segment is taken). Then the loss
     * probe: restarted by an ACK of new data, cancelled whenever none may go
     * (TcpConnection._arm_pto); and RACK's reordering timer (_arm_reorder). */
    int marker = t->undo_open && !t->undo_expired;
    int enter = t->sack_ok && sack_ack(t, &nb, (uint32_t)sacked_new, adv, dupack, marker, now);
    if (adv > 0)
        pto_arm(dp, f, now);
    else if (t->pto_at && !tlp_allowed(t))
        t->pto_at = 0;
    if (t->rack_timeout)
        timer_arm(dp, f, t->rack_timeout);
    /* On every ACK: one after an open undo episode's deadline ends the episode (its
     * D-SACKs would have come back); Python ends it at hand-back. */
    if (t->undo_open && now > t->undo_until)
        t->undo_expired = 1;
    t->segs_in++;
    if (t->keepalive_idle > 0) /* TcpConnection._arm_keepalive */
        t->keepalive_at = now + t->keepalive_idle;
    timer_arm(dp, f, t->keepalive_at);
    if (len && ahead > 0) {
        /* _rcv_text: out of order, held; RFC 5681 §4.2: a duplicate ACK at once. */
        ooo_store(f, p->seq, frame + p->payload_off, len);
        t->bytes_in += len;
        t->ooo_segs++;
        dp->st.rx_ooo++;
        t->ack_now = 1;
        t->ack_immediate = 1;
    } else if (len) {
        /* _deliver: in order into the receive buffer; delayed ACK (RFC 9293 §3.8.6.3). */
        ring_put(&dp->pool, &f->rcv, frame + p->payload_off, len);
        t->rcv_nxt += len;
        t->bytes_in += len;
        if (len > t->rcv_mss)
            t->rcv_mss = umin(len, t->cfg_mss);
        if (t->ooo_count) {
            /* RFC 5681 §4.2: a segment that fills all or part of a gap is ACKed at
             * once, and the held bytes it reaches are in order now. */
            t->ack_now = 1;
            t->ack_immediate = 1;
            ooo_deliver(dp, f);
        }
        /* The ACK goes at this round's output, as TcpConnection's does at its
         * transmit step: one per round covers every segment the round took. */
        if ((uint32_t)(t->rcv_nxt - t->last_ack_rcv_nxt) >= ACK_EVERY * t->rcv_mss)
            t->ack_now = 1;
        else if (!t->ack_now && t->delack_at == 0)
            t->delack_at = now + t->delack_timeout;
    }
    if (fin)
        fin_received(dp, f, now);
    if (enter)
        hand_back(dp, f, DP_REASON_RECOVERY); /* Python enters recovery (_enter) */
    else if (!t->born && t->tcp_state == DP_FIN_WAIT_2)
        /* A flow Python gave C, its FIN acknowledged: FIN-WAIT-2 is Python's (its pump
         * shows the application the peer's FIN and finishes, Pump.finished). */
        hand_back(dp, f, DP_REASON_APP_EOF);
    return 1;
}

/* --- the application channel (service mode) ----------------------------------------- */

/* ReceiveBuffer.read + note_read: the application took n bytes; once per RTT, grow the
 * buffer to twice what it drained when it drained more than half of it (Linux's
 * dynamic right-sizing, tcp_rcv_space_adjust), up to rcv_max, never shrinking. */
static void rcv_note_read(struct flow *f, double now, uint32_t n)
{
    struct dp_tcb *t = &f->t;
    t->rcv_epoch_read += n;
    if (t->srtt <= 0)
        return; /* no time scale to measure against yet */
    if (t->rcv_epoch_start < 0 || now < t->rcv_epoch_start) {
        t->rcv_epoch_start = now;
        t->rcv_epoch_read = 0;
        return;
    }
    if (now - t->rcv_epoch_start < t->srtt)
        return;
    if (2 * (uint64_t)t->rcv_epoch_read > t->rcv_cap) {
        uint64_t grown = 2 * (uint64_t)t->rcv_epoch_read;
        if (grown > t->rcv_max)
            grown = t->rcv_max;
        if (grown > t->rcv_cap) {
            t->rcv_cap = (uint32_t)grown;
            f->rcv.cap = t->rcv_cap + t->rcv_slack; /* the ring may grow to it */
        }
    }
    t->rcv_epoch_start = now;
    t->rcv_epoch_read = 0;
}

/* Pump._to_app: the peer's FIN, after its bytes: the application reads EOF. An
 * application that closed its end reads nothing more, and is spared the call. */
static void fin_to_app(struct dp *dp, struct flow *f)
{
    f->t.fin_to_app = 1;
    if (f->t.chan)
        dp_chan_rx_eof(dp, f->t.chan); /* after the last byte put: the reader's EOF */
    if (!f->app_closed)
        shutdown(f->t.app_fd, SHUT_WR);
}

static void chan_broken(struct dp *dp, struct flow *f);
static void app_lost(struct dp *dp, struct flow *f);
static uint32_t app_eof_watch(const struct flow *f);
static void app_took(struct dp *dp, struct flow *f, double now, uint32_t n);
static void chan_write(struct dp *dp, struct flow *f, double now);
static void chan_revert(struct dp *dp, struct flow *f);
static int chan_flush(struct dp *dp, struct flow *f);

/* Hand the receive ring to the application's socket; wait for EPOLLOUT if it is full. */
static void app_write(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    if (t->app_fd < 0 || f->state != FLOW_C || t->claim_wait)
        return; /* claim_wait: nothing before the application's claim (or claim_by) */
    if (t->chan) {
        chan_write(dp, f, now);
        return;
    }
    if (t->revert_chan && !chan_flush(dp, f))
        return;
    if (f->rcv.len == 0) {
        if (t->peer_fin && !t->fin_to_app)
            fin_to_app(dp, f);
        return;
    }
    struct iovec iov[2];
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)ring_data_iov(&f->rcv, iov)};
    ssize_t n = sendmsg(t->app_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            dp->st.app_eagain++;
            n = 0;
        } else {
            app_lost(dp, f); /* EPIPE, ECONNRESET: closed, these bytes never taken */
            return;
        }
    }
    dp->st.app_writes++;
    dp->st.app_write_bytes += (uint64_t)n;
    ring_consume(&f->rcv, (uint32_t)n);
    uint32_t want = (f->epoll_mask & ~(uint32_t)EPOLLOUT) | (f->rcv.len ? EPOLLOUT : 0);
    epoll_set(dp, f, want ? want : (t->app_eof ? app_eof_watch(f) : APP_IN));
    app_took(dp, f, now, (uint32_t)n);
}

/* After n bytes left the receive ring for the application (its socket or its rx
 * ring, which play the socket buffer's part): the peer's FIN once they are all gone,
 * and the window. */
static void app_took(struct dp *dp, struct flow *f, double now, uint32_t n)
{
    struct dp_tcb *t = &f->t;
    if (f->rcv.len == 0 && t->peer_fin && !t->fin_to_app)
        fin_to_app(dp, f);
    /* TcpConnection._after_read: autotune, then a window that at least doubled by a
     * worthwhile step is announced at once (Linux's rule), while the window the peer
     * knows may hold it back: below what it still sends before it stops (one segment
     * short of it) plus the two full segments that draw our ACK anyway (ACK_EVERY),
     * and a scale unit for a rounded-up right edge. */
    if (n > 0) {
        rcv_note_read(f, now, (uint32_t)n);
        int32_t cur = sdiff(t->rcv_adv, t->rcv_nxt);
        uint32_t current = cur > 0 ? (uint32_t)cur : 0;
        /* The ring may hold a rounded-up window's slack past capacity (rcv_slack). */
        uint32_t window = t->rcv_cap > f->rcv.len ? t->rcv_cap - f->rcv.len : 0;
        uint32_t avail = umin(window, 0xFFFFu << t->rcv_shift);
        uint32_t threshold = umin(t->rcv_cap / 2, t->rcv_mss);
        uint32_t holds_back = (ACK_EVERY + 1) * t->cfg_mss + (1u << t->rcv_shift);
        if (current < holds_back && avail >= current && avail - current >= threshold &&
            avail >= 2 * current) {
            t->ack_now = 1;
            touch(dp, f);
        }
    }
}

/* Read what the application wrote into the send ring (only after epoll said so: no
 * read is a poll). A short read drained the socket: wait for the next report. */
/* Room in the send ring for the application's next read. The ring starts at RING_MIN
 * (a pooled buffer: a short connection's reply fits, and nothing is malloc'd) and
 * doubles, up to the send buffer's capacity, when a read finds less than that free.
 * Sizing it for 64 KiB at the first read made every connection malloc and free 64 KiB
 * (5% of the service's CPU under a connection-rate load, perf 2026-12-03); a bulk
 * writer reaches the full size after a few reads. */
static void snd_room(struct dp *dp, struct flow *f, int eof_expected)
{
    struct ring *r = &f->snd;
    if (r->borrowed)
        return; /* the channel's tx, whole */
    /* A read that only looks for the EOF after a short read needs one free byte: growing
     * for it turned every short connection's 4 KiB ring into a malloc'd 8 KiB one (4% of
     * the service's CPU per connection, perf 2026-12-04). Bytes that do come fill it,
     * and the next pass grows it. */
    uint32_t want = umin(r->cap - r->len, eof_expected ? 1 : RING_MIN);
    if (r->size - r->len >= want)
        return;
    (void)ring_room(&dp->pool, r, umin(r->cap - r->len, umax(r->size, RING_MIN)));
}

/* The application's end is gone with bytes it never took: it closed with them unread
 * (in its socket, or in rx), or could not take them. Python resets the connection after
 * what it wrote (Pump.app_closed: TcpConnection.close(lost)), as Linux's close with
 * unread data does (RFC 1122 §4.2.2.13). */
static void app_lost(struct dp *dp, struct flow *f)
{
    dp->st.app_closed_unread++;
    f->t.app_gone = 1;
    hand_back(dp, f, DP_REASON_APP_GONE);
}

/* The application's end of the stream: its shutdown(SHUT_WR) or close.
 * Pump.app_shut_down -> TcpConnection.shutdown_write (RFC 9293 §3.10.4): the FIN
 * follows the queued bytes, which are all in the send ring now. A flow Python gave C
 * stays here through FIN-WAIT-1 as one born here does: the rest of a download is
 * C's, not Python's. The peer's FIN is still Python's for such a flow (flow_input),
 * and so is what follows the acknowledgment of ours (fin_acked). */
static void app_eof(struct dp *dp, struct flow *f)
{
    struct dp_tcb *t = &f->t;
    t->app_eof = 1;
    t->fin_queued = 1;
    if (t->tcp_state == DP_ESTABLISHED)
        t->tcp_state = DP_FIN_WAIT_1;
    else if (t->tcp_state == DP_CLOSE_WAIT)
        t->tcp_state = DP_LAST_ACK;
    /* A stream's socket stays readable after its EOF: watched for its close only
     * (app_eof_watch). A ring-mode socket after a shutdown the shim only noted (tx_eof)
     * is open both ways, and still carries doorbells and a revert request; once it hangs
     * up, chan_read lets it go. */
    if (!t->chan)
        epoll_set(dp, f, (f->epoll_mask & ~(uint32_t)APP_IN) | app_eof_watch(f));
    else if (f->app_closed || f->app_hup)
        epoll_set(dp, f, f->epoll_mask & ~(uint32_t)APP_IN);
    touch(dp, f);
}

/* After a stream's EOF, the application may still close with bytes we gave it unread,
 * which Linux answers with a reset (RFC 1122 §4.2.2.13): its socket is watched for that
 * close (APP_HANGUP) until it comes. The unix socket reports EPOLLHUP once both
 * directions are shut, so after our own shutdown (fin_to_app) the hang-up comes at once
 * and says nothing: the watch ends there, and a close after it is not heard. */
static uint32_t app_eof_watch(const struct flow *f)
{
    return f->app_closed ? 0 : APP_HANGUP;
}

/* A stream's socket hung up after its EOF (app_eof_watch): lost bytes (unread in its
 * socket, EPOLLERR, or not yet given to it) reset the connection; else the watch ends. */
static void app_hung_up_after_eof(struct dp *dp, struct flow *f)
{
    if (!f->app_closed)
        return;
    if (!f->t.app_gone && (f->app_err || f->rcv.len > 0))
        app_lost(dp, f);
    else
        epoll_set(dp, f, f->epoll_mask & ~(uint32_t)APP_HANGUP);
}

static int app_first_bytes(struct dp *dp, struct flow *f);
static void chan_read(struct dp *dp, struct flow *f);

static void app_read(struct dp *dp, struct flow *f)
{
    struct dp_tcb *t = &f->t;
    f->app_readable = 0;
    if (t->app_fd < 0 || f->state != FLOW_C)
        return;
    if (t->claim_check && app_first_bytes(dp, f) <= 0)
        return; /* read nothing yet, or ended the flow's stream */
    if (t->chan) {
        chan_read(dp, f);
        return;
    }
    if (t->app_eof) {
        app_hung_up_after_eof(dp, f); /* its writer is done: only its close is news */
        return;
    }
    /* Up to APP_READ_BUDGET bytes, as one read of that size would take them (the ring
     * grows as they come: snd_room); then, when the writer shut down, on to its EOF. */
    uint32_t taken = 0;
    /* After the writer's shutdown a read may find nothing but its EOF: that read needs
     * one free byte, not a grown ring (snd_room). */
    int eof_expected = f->app_hup;
    for (int pass = 0; pass < 12; pass++) {
        struct iovec iov[2];
        snd_room(dp, f, eof_expected);
        int parts = ring_free_iov(&f->snd, iov);
        if (parts == 0) {
            /* The send buffer is full: stop listening until ACKs free it. */
            t->write_blocked = 1;
            epoll_set(dp, f, f->epoll_mask & ~(uint32_t)APP_IN);
            return;
        }
        ssize_t n = readv(t->app_fd, iov, parts);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            app_lost(dp, f); /* ECONNRESET: it closed with bytes unread */
            return;
        }
        if (n == 0) {
            app_eof(dp, f);
            return;
        }
        dp->st.app_reads++;
        dp->st.app_read_bytes += (uint64_t)n;
        f->snd.len += (uint32_t)n;
        taken += (uint32_t)n;
        touch(dp, f);
        size_t offered = iov[0].iov_len + (parts > 1 ? iov[1].iov_len : 0);
        int filled = (size_t)n == offered;
        eof_expected = 0;
        if (filled && taken < APP_READ_BUDGET)
            continue; /* it filled what the ring offered: there may be more */
        if (!f->app_hup)
            return;
        if (!filled) {
            /* A short read after the writer shut down (EPOLLRDHUP came before this
             * read): it took everything that writer will ever send, so this is its EOF,
             * without a read that returns 0 to say so (one system call less a
             * connection). Unless it closed with bytes unread (the read that returns
             * the socket's ECONNRESET is the one skipped). */
            if (f->app_err)
                app_lost(dp, f);
            else
                app_eof(dp, f);
            return;
        }
    }
}

/* --- the shared-memory channel (docs/channels.md, cffi_build/chan.h) ---------------- */

/* The application wrote an impossible index into its channel: the connection is
 * reset, as for an application that vanished (Python resets it: Pump.app_closed). */
static void chan_broken(struct dp *dp, struct flow *f)
{
    dp->st.chan_broken++;
    f->t.app_gone = 1;
    hand_back(dp, f, DP_REASON_APP_GONE);
}

/* The claim check (dp_tcb.claim_check): read the application's first bytes on their
 * own, with the descriptor that may come with them. A claim makes the flow ring mode,
 * or is refused (stream mode, its bytes consumed); payload goes to the send ring as
 * any read's would. 1: go on reading as the flow's mode says; 0: nothing yet, or the
 * application's EOF came first (handled); -1: the flow left C. */
static int app_first_bytes(struct dp *dp, struct flow *f)
{
    struct dp_tcb *t = &f->t;
    uint8_t first[sizeof(struct jr_chan_claim)];
    int64_t n;
    /* Claimable while delivery still waited for it: nothing was delivered yet. */
    int64_t chan = dp_chan_take_first(dp, t->app_fd, first, sizeof first, t->claim_wait, &n);
    if (n == -EAGAIN || n == -EWOULDBLOCK || n == -EINTR)
        return 0;
    t->claim_check = 0;
    t->claim_wait = 0; /* whatever came, the application has spoken */
    if (n < 0) {
        app_lost(dp, f); /* ECONNRESET: closed with what was delivered unread */
        return -1;
    }
    if (n == 0) {
        app_eof(dp, f);
        return 0;
    }
    touch(dp, f); /* what waited for this (the receive ring) goes out this round */
    if (chan > 0) {
        t->chan = (uint32_t)chan;
        chan_door_mode(dp, t->chan, 1);
        epoll_set(dp, f, APP_IN); /* bytes on the socket now only say "look" */
    } else if (chan == -ENOMSG) {
        /* Payload: the application speaks first (a banner). */
        snd_room(dp, f, 0);
        if (ring_put(&dp->pool, &f->snd, first, (uint32_t)n) != (uint32_t)n) {
            t->app_gone = 1; /* cannot happen: a fresh send ring holds 32 bytes */
            hand_back(dp, f, DP_REASON_APP_GONE);
            return -1;
        }
        dp->st.app_reads++;
        dp->st.app_read_bytes += (uint64_t)n;
    }
    return 1;
}

/* A flow ends before its application's first bytes were read: a claim among them is
 * answered (refused), so the application's slot is its own again, not lost. */
static void claim_refuse_unread(struct dp *dp, struct flow *f)
{
    uint8_t first[sizeof(struct jr_chan_claim)];
    int64_t n;
    dp_chan_take_first(dp, f->t.app_fd, first, sizeof first, 0, &n); /* never a channel */
    f->t.claim_check = f->t.claim_wait = 0;
}

/* app_write in ring mode: the receive ring's bytes into rx, with the token they owe. */
static void chan_write(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    uint32_t moved = 0;
    while (f->rcv.len > 0) {
        struct iovec iov[2];
        ring_data_iov(&f->rcv, iov);
        int64_t n = dp_chan_deliver(dp, t->chan, t->app_fd, iov[0].iov_base,
                                    (uint32_t)iov[0].iov_len);
        if (n == -EPROTO) {
            chan_broken(dp, f);
            return;
        }
        if (n < 0) { /* the token's send failed: its end is closed (EPIPE, ECONNRESET) */
            app_lost(dp, f); /* the bytes just put are unread */
            return;
        }
        if (n == 0)
            break; /* rx is full: chan_settle arms for room */
        ring_consume(&f->rcv, (uint32_t)n);
        moved += (uint32_t)n;
    }
    if (moved) {
        dp->st.app_writes++;
        dp->st.app_write_bytes += moved;
    }
    app_took(dp, f, now, moved);
}

/* A revert request chan_read can act on: it takes what tx still holds first, so the
 * send ring needs room unless tx is empty (with the ring full, ACKs wake the flow, as
 * they do any writer). */
static int chan_revert_ready(const struct flow *f, const struct jr_chan_svc *s)
{
    return jr_chan_svc_revert_asked(s) &&
           (f->snd.len < f->snd.cap || jr_chan_svc_tx_avail(s) == 0);
}

/* app_read in ring mode: tx's bytes into the send ring; the application's EOF is its
 * shutdown (tx_eof) or its close (the socket's hang-up) once tx is empty. */
static void chan_read(struct dp *dp, struct flow *f)
{
    struct dp_tcb *t = &f->t;
    struct jr_chan_svc *s = chan_svc(dp->chans, t->chan);
    uint32_t taken = 0;
    if (s == NULL)
        return;
    /* Doorbells: level-triggered, they would wake every epoll_wait. A hang-up is looked
     * behind too: an application that left ring mode closed the old socket after its
     * request (chan_revert). */
    if (f->app_rung || f->app_closed || f->app_hup) {
        f->app_rung = 0;
        jr_chan_svc_drain(s, t->app_fd);
    }
    int borrowed = snd_borrow(dp, f, s);
    while (taken < APP_READ_BUDGET) {
        int64_t unseen = borrowed ? jr_chan_svc_tx_avail(s) : -1;
        if (unseen >= 0 && (uint64_t)unseen + f->snd.len == f->snd.size &&
            snd_unborrow(dp, f) == 0) {
            /* The writer filled tx: a bulk writer, whose pipe would be tx alone, its
             * room coming back an ACK late (iperf3 -R borrowed: 0.59-0.77 times the
             * kernel's throughput, against 1.49 times copied; the demo's 64 MiB
             * downloads, each a new connection still in slow start, 0.95 against
             * 1.28 when copied only once TCP's send buffer outgrew tx). Its bytes are
             * copied out, and from now on it takes by copying, as every flow did
             * before tx was borrowed: returned to borrowing each time its send ring
             * emptied, it came back here 800 times a second. */
            borrowed = 0;
            f->snd_copies = 1;
            dp->st.chan_tx_copied++;
        }
        snd_room(dp, f, 0);
        struct iovec iov[2];
        int parts = borrowed ? f->snd.len < f->snd.cap : ring_free_iov(&f->snd, iov);
        if (parts == 0 && jr_chan_svc_revert_asked(s) && jr_chan_svc_tx_avail(s) == 0)
            break; /* a full send ring holds tx's last bytes: the revert goes now */
        if (parts == 0) {
            /* Resumed when ACKs free room (transmit_touched). Meanwhile the socket is
             * not watched: its bytes are the blocked writer's filler, and draining
             * them would wake it for nothing, over and over (docs/channels.md, "A
             * writer blocked with rx full"). A doorbell for rx room comes by the
             * arena's door; only a socket-armed channel must still hear it there. */
            t->write_blocked = 1;
            if (f->rcv.len == 0 || s->arena_door != NULL)
                epoll_set(dp, f, f->epoll_mask & ~(uint32_t)APP_IN);
            return;
        }
        if (borrowed) {
            /* In place: no copy, so no budget either. */
            int64_t k = jr_chan_svc_tx_peek(s, f->snd.cap - f->snd.len);
            if (k < 0) {
                chan_broken(dp, f);
                return;
            }
            if (k > 0) {
                f->snd.len += (uint32_t)k;
                dp->st.app_reads++;
                dp->st.app_read_bytes += (uint64_t)k;
                touch(dp, f);
            }
            break;
        }
        uint32_t got = 0;
        for (int i = 0; i < parts; i++) {
            int64_t k = dp_chan_collect(dp, t->chan, t->app_fd, iov[i].iov_base,
                                        (uint32_t)iov[i].iov_len);
            if (k < 0) {
                chan_broken(dp, f);
                return;
            }
            got += (uint32_t)k;
            if ((size_t)k < iov[i].iov_len)
                break;
        }
        if (got == 0)
            break;
        f->snd.len += got;
        taken += got;
        dp->st.app_reads++;
        dp->st.app_read_bytes += got;
        touch(dp, f);
    }
    if (taken >= APP_READ_BUDGET) {
        f->app_readable = 1; /* more may wait: the next round looks again */
        return;
    }
    /* tx_eof before the look at tx (chan.h: no byte follows tx_eof, so an empty tx
     * after it is the end). */
    int tx_eof = jr_chan_svc_tx_eof(s);
    if (jr_chan_svc_revert_asked(s) && jr_chan_svc_tx_avail(s) == 0) {
        chan_revert(dp, f); /* tx held its last bytes: they are in the send ring */
        return;
    }
    /* A hang-up of its socket (close, or a half-close the shim did not see) ends it too:
     * no doorbell can come after it, and epoll would report it on every wait. */
    int hung = f->app_closed || f->app_hup;
    if (f->app_closed && !t->app_gone && jr_chan_svc_tx_avail(s) == 0 &&
        (f->rcv.len > 0 || jr_chan_svc_rx_unread(s) != 0)) {
        /* Closed with bytes it never read, in rx or still to come: they are lost, and
         * the peer learns it by a reset (RFC 1122 §4.2.2.13, as Linux's close with
         * unread data), after what the application wrote (Python: close(lost)). */
        app_lost(dp, f);
        return;
    }
    if (!t->app_eof && (tx_eof || hung) && jr_chan_svc_tx_avail(s) == 0)
        app_eof(dp, f);
    else if (t->app_eof && hung)
        epoll_set(dp, f, f->epoll_mask & ~(uint32_t)APP_IN);
}

/* The application left ring mode (chan.h, JR_CHAN_REVERT_BYTE: an exec, a descriptor
 * passed on): the flow is a stream from now on, on the application's new socket, which
 * took app_fd's number (so Python's socket object, for a flow it gave C, names it too).
 * rx's bytes the application never read go first (revert_chan: chan_flush). */
static void chan_revert(struct dp *dp, struct flow *f)
{
    struct dp_tcb *t = &f->t;
    if (snd_unborrow(dp, f) < 0) {
        f->app_readable = 1; /* no memory for the copy now: the next round tries again */
        return;
    }
    chan_door_mode(dp, t->chan, 0);
    epoll_set(dp, f, 0); /* the old socket's registration: dup3 closes that socket */
    int rc = dp_chan_revert(dp, t->chan, t->app_fd);
    if (rc == -EPROTO || rc == 0) { /* 0: tx moved after the request, which it may not */
        chan_broken(dp, f);
        return;
    }
    if (rc < 0) {
        t->app_gone = 1;
        hand_back(dp, f, DP_REASON_APP_GONE);
        return;
    }
    t->revert_chan = t->chan;
    t->chan = 0;
    t->fin_to_app = 0; /* an EOF shown on the old socket is shown again, after the bytes */
    f->app_rung = f->app_hup = f->app_closed = f->app_err = 0; /* the old socket's */
    epoll_set(dp, f, (t->app_eof ? 0 : APP_IN) | EPOLLOUT);
    f->app_readable = !t->app_eof;
    touch(dp, f);
}

/* A stream after a revert: rx's bytes the application never read go before any other.
 * 1 once they are all sent (the channel is released); 0 while the socket is full (wait
 * for EPOLLOUT), or when the flow left C. */
static int chan_flush(struct dp *dp, struct flow *f)
{
    struct dp_tcb *t = &f->t;
    int64_t left = dp_chan_flush(dp, t->revert_chan, t->app_fd);
    if (left < 0) {
        app_lost(dp, f); /* rx's bytes it never read cannot reach it now */
        return 0;
    }
    if (left > 0) {
        epoll_set(dp, f, f->epoll_mask | EPOLLOUT);
        return 0;
    }
    dp_chan_release(dp, t->revert_chan);
    t->revert_chan = 0;
    epoll_set(dp, f, f->epoll_mask & ~(uint32_t)EPOLLOUT); /* app_write wants it back */
    return 1;
}

/* Arm for what a ring-mode flow waits for from the application (room in rx, bytes in
 * tx), draining the socket's "look" bytes first (jr_chan_svc_idle). Work found
 * instead runs next round. */
static void chan_arm(struct dp *dp, struct flow *f)
{
    struct dp_tcb *t = &f->t;
    if (!t->chan || f->state != FLOW_C || t->app_fd < 0)
        return;
    int waits = 0;
    if (f->rcv.len > 0)
        waits |= JR_CHAN_WAIT_ROOM;
    if (!t->app_eof && f->snd.len < f->snd.cap)
        waits |= JR_CHAN_WAIT_BYTES;
    /* Drain only what epoll said is there: an empty socket's recv is a wasted system
     * call per flow per sleep (jr_chan_svc_arm says why skipping it is safe). */
    struct jr_chan_svc *s = chan_svc(dp->chans, t->chan);
    if (s == NULL)
        return;
    if (f->app_rung) {
        f->app_rung = 0;
        jr_chan_svc_drain(s, t->app_fd);
    }
    /* A revert request: chan_read switches the flow next round, once it can take what
     * tx holds (with the send ring full, ACKs wake it, as they do any writer). */
    if (chan_revert_ready(f, s)) {
        f->app_readable = 1;
        if (!f->chan_again) {
            f->chan_again = 1;
            dp->again[dp->n_again++] = (uint32_t)(f - dp->flows);
        }
        return;
    }
    if (waits == 0) {
        /* Nothing awaited, but a re-token request is still answered (a read that left
         * bytes in rx would otherwise wait for a token nobody sends). */
        jr_chan_svc_answer_retoken(s, t->app_fd);
        return;
    }
    if ((waits & JR_CHAN_WAIT_ROOM) && s->arena_door == NULL && !(f->epoll_mask & EPOLLIN) &&
        !f->app_closed && !f->app_hup) {
        /* Room armed on the socket (the door was dropped while chan_read stopped
         * watching it for a blocked writer): its doorbell comes there. */
        epoll_set(dp, f, f->epoll_mask | APP_IN);
    }
    int rc = jr_chan_svc_arm(s, t->app_fd, waits);
    if (rc == -EPROTO) {
        chan_broken(dp, f);
    } else if (rc == 0) {
        /* Room or bytes came meanwhile: the flow runs again next round (not in this
         * one's list, which a busy application could then keep growing). */
        f->app_readable = 1;
        if (!f->chan_again) {
            f->chan_again = 1;
            dp->again[dp->n_again++] = (uint32_t)(f - dp->flows);
        }
    } else if (rc < 0) {
        /* The re-token's send failed (EPIPE, ECONNRESET): the application's end is
         * closed. A hang-up, as epoll would report it: chan_read takes tx's last bytes
         * and tells a close with bytes left unread (a reset) from one without (an EOF).
         * An unread token alone is no lost byte. */
        f->app_closed = 1;
        f->app_readable = 1;
        if (!f->chan_again) {
            f->chan_again = 1;
            dp->again[dp->n_again++] = (uint32_t)(f - dp->flows);
        }
    }
}

/* After a ring-mode flow's work. While the loop runs, the flow is polled rather than
 * armed: it joins dp->ringpoll, whose rings every round looks at (ringpoll_scan), so
 * the application's writes ring no doorbell, which is a system call and a wake-up
 * each (the channel benchmark's cost). Before the loop sleeps, ringpoll_settle arms
 * them all: a flow is always either armed or looked at before the next sleep. */
static void chan_settle(struct dp *dp, struct flow *f)
{
    if (!f->t.chan || f->state != FLOW_C || f->t.app_fd < 0 || f->in_ringpoll)
        return;
    f->in_ringpoll = 1;
    dp->ringpoll[dp->n_ringpoll++] = (uint32_t)(f - dp->flows);
    dp->st.chan_polled = dp->n_ringpoll;
}

/* The door rang (its application wrote, read or shut down on a channel armed at the
 * last sleep): poll every flow that waited on it. */
static void door_rung(struct dp *dp)
{
    dp->door_rung = 0;
    for (uint32_t i = 0; i < dp->n_doorwait; i++) {
        struct flow *f = &dp->flows[dp->doorwait[i]];
        f->in_doorwait = 0;
        chan_settle(dp, f); /* a flow that ended since is skipped there */
    }
    dp->n_doorwait = 0;
}

/* Each round: polled flows whose rings have work run now (no doorbell announced it). */
static void ringpoll_scan(struct dp *dp)
{
    for (uint32_t i = 0; i < dp->n_ringpoll; i++) {
        struct flow *f = &dp->flows[dp->ringpoll[i]];
        struct dp_tcb *t = &f->t;
        struct jr_chan_svc *s = f->state == FLOW_C ? chan_svc(dp->chans, t->chan) : NULL;
        if (s == NULL || t->app_fd < 0)
            continue;
        jr_chan_svc_answer_retoken(s, t->app_fd); /* a read left bytes unannounced */
        /* A revert request a drain took (an ACK's, snd_give_back) is looked at as bytes
         * are: chan_read switches the flow. */
        int bytes = chan_revert_ready(f, s) ||
                    (!t->app_eof && f->snd.len < f->snd.cap &&
                     (jr_chan_svc_tx_avail(s) != 0 || jr_chan_svc_tx_eof(s)));
        int room = f->rcv.len > 0 && jr_chan_svc_rx_room(s) != 0;
        if (bytes || room) {
            f->app_readable |= bytes;
            touch(dp, f);
        }
    }
}

/* The loop is about to sleep: arm every polled flow. 1 if one has work after all.
 * A flow of the door's application (embedded mode) joins dp->doorwait: its application
 * rings the process's door rather than its socket, and the door's ring puts every such
 * flow back on the polled list (door_rung). */
static int ringpoll_settle(struct dp *dp)
{
    if (dp->door != NULL)
        jr_door_arm(dp->door); /* before any channel's flag (chan.h, struct jr_door) */
    for (uint32_t i = 0; i < dp->n_ringpoll; i++) {
        struct flow *f = &dp->flows[dp->ringpoll[i]];
        f->in_ringpoll = 0;
        chan_arm(dp, f);
        struct jr_chan_svc *s = f->state == FLOW_C ? chan_svc(dp->chans, f->t.chan) : NULL;
        if (s != NULL && (s->bell != NULL || s->arena_door != NULL) && !f->in_doorwait) {
            f->in_doorwait = 1;
            dp->doorwait[dp->n_doorwait++] = (uint32_t)(f - dp->flows);
        }
    }
    dp->n_ringpoll = 0;
    dp->st.chan_polled = 0;
    return dp->n_again > 0 || dp->n_handbacks > 0; /* work, or a flow for Python */
}

/* --- connections born in C: the passive open (dp_listen) --------------------------- */

static struct flow *flow_insert(struct dp *dp, const struct dp_tcb *tcb);

static struct listener *listener_of(struct dp *dp, uint16_t port)
{
    for (uint32_t i = 0; i < dp->n_listeners; i++)
        if (dp->listeners[i].cfg.port == port)
            return &dp->listeners[i];
    return NULL;
}

/* congestion.initial_window, RFC 6928 §2 (TcpConfig sets no other). */
static uint32_t initial_window(uint32_t mss)
{
    return umin(10 * mss, umax(2 * mss, 14600));
}

/* A half-open flow of f's port is no longer half-open. */
static void half_open_done(struct dp *dp, const struct flow *f)
{
    struct listener *l = listener_of(dp, f->t.local_port);
    if (l != NULL && l->half_open > 0)
        l->half_open--;
}

/* dp_path_mss's slot of a destination (16-byte form and family). */
static uint32_t path_slot(const uint8_t ip[16], uint8_t ipv6)
{
    uint64_t h = (load64(ip) ^ load64(ip + 8) * 0x9E3779B97F4A7C15ull ^ ipv6) *
                 0xFF51AFD7ED558CCDull;
    return (uint32_t)(h >> 56) % DP_PATH_SLOTS;
}

int dp_path_mss(struct dp *dp, const uint8_t *ip, uint32_t ip_len, uint16_t mss,
                double expires)
{
    if (ip_len != 4 && ip_len != 16)
        return -EINVAL;
    struct path_entry e = {.mss = mss, .expires = expires, .ipv6 = ip_len == 16};
    memcpy(e.ip, ip, ip_len);
    dp->paths[path_slot(e.ip, e.ipv6)] = e;
    return 0;
}

/* The learned path MSS (with options) toward a flow's remote address, or 0. */
static uint32_t path_mss_of(const struct dp *dp, const struct dp_tcb *t, double now)
{
    const struct path_entry *e = &dp->paths[path_slot(t->remote_ip, t->ipv6)];
    return e->mss && e->ipv6 == t->ipv6 && now < e->expires &&
                   memcmp(e->ip, t->remote_ip, 16) == 0
               ? e->mss : 0;
}

/* The names of l that take connections of the family of an IPv6 (ipv6) or IPv4 flow. */
static uint32_t takers(const struct listener *l, int ipv6)
{
    return (ipv6 ? l->cfg.takes6 : l->cfg.takes4) & ((1u << l->cfg.n_names) - 1);
}

/* Listener.receive for a SYN to a port C listens on: TcpConnection.accept_syn (options
 * by options.negotiate, the TCB by _take_syn) and the SYN-ACK of its first _transmit.
 * a6: an IPv6 SYN's addresses (wire_parse_batch6). iss: the ISS to use (a 4-tuple
 * reopened from TIME-WAIT), or 0 for isn.py's rule. 1: taken; 0: Python's (a SYN with
 * anything else, a VLAN tag, a full queue, a family no application listens for). */
static struct dp_syn_offer offer_of_listener(const struct dp_listen_cfg *c)
{
    return (struct dp_syn_offer){c->default_peer_mss, c->min_peer_mss, c->window_scaling,
                                 c->window_scale_shift, c->timestamps, c->sack};
}

/* An offer C can negotiate: a scale RFC 7323 §2.3 allows, an MSS floor that leaves room
 * for the timestamp option. */
static int offer_ok(const struct dp_syn_offer *o)
{
    return o->window_scale_shift <= 14 && o->min_peer_mss >= MIN_SMSS + 12;
}

/* A connection template C can run (dp_listen's, dp_connect's): Ethernet, IP (IPv4's 20
 * bytes, IPv6's 40) and TCP headers around a full segment (the timestamp option comes
 * out of the MSS: options.negotiate), what emit() builds, must fit a frame; buffers;
 * no keepalive (Python's). */
static int template_ok(const struct dp *dp, const struct dp_tcb *t, uint8_t ipv6)
{
    return t->cfg_mss >= 88 &&
           t->cfg_mss + 14 + ip_header_len(ipv6) + 20 <= dp->cfg.max_frame &&
           t->snd_cap != 0 && t->rcv_cap != 0 && t->keepalive_idle == 0;
}

/* TcpConnection._take_syn: the peer's SYN (or SYN-ACK) recorded in t, its IRS and
 * options negotiated against ours (options.negotiate: each option only if both
 * offered it, RFC 7323 §1.3, RFC 2018 §2; 536 without an MSS option, RFC 9293 §3.7.1,
 * floored against CVE-2019-11479), and set_mss: the controller's initial window
 * follows the MSS. */
static void take_syn(struct dp *dp, struct dp_tcb *t, const struct wire_parsed *p,
                     const struct dp_syn_offer *o, double now)
{
    uint32_t peer_mss = umax(p->has_mss ? p->mss : o->default_peer_mss, o->min_peer_mss);
    t->ws_ok = o->window_scaling && p->has_wscale;
    t->snd_shift = t->ws_ok ? (uint8_t)umin(p->wscale, 14) : 0;
    t->rcv_shift = t->ws_ok ? o->window_scale_shift : 0;
    t->ts_ok = o->timestamps && p->has_ts;
    uint32_t ts_len = t->ts_ok ? 12 : 0;
    t->sack_ok = o->sack && p->sack_permitted;
    uint32_t smss = umax(umin(peer_mss, t->cfg_mss) - ts_len, MIN_SMSS);
    uint32_t path = path_mss_of(dp, t, now); /* a router told us the path is narrower */
    if (path && path - ts_len < smss) {
        smss = umax(path - ts_len, MIN_SMSS);
        dp->st.syn_path_mss++;
    }
    t->irs = p->seq;
    t->rcv_nxt = t->rcv_adv = t->last_ack_rcv_nxt = p->seq + 1;
    t->rcv_slack = (1u << t->rcv_shift) - 1;
    if (t->ts_ok) {
        t->ts_recent = p->tsval;
        t->ts_recent_age = now;
    }
    t->smss = smss;
    if (t->cc_pristine)
        t->cwnd = initial_window(smss);
    t->cwnd = umax(t->cwnd, smss);
    if (t->ssthresh < 2 * smss)
        t->ssthresh = 2 * smss;
    t->cc_iw = initial_window(smss);
    t->snd_wnd = p->window; /* never scaled in a SYN (RFC 7323 §2.2) */
    t->max_snd_wnd = umax(t->max_snd_wnd, t->snd_wnd);
    t->snd_wl1 = p->seq;
    t->rcv_mss = umin(t->cfg_mss, peer_mss) - ts_len;
}

static int syn_input(struct dp *dp, struct listener *l, const struct wire_parsed *p,
                     const struct wire_addr6 *a6, const uint8_t *frame, double now,
                     uint32_t iss)
{
    const struct dp_listen_cfg *c = &l->cfg;
    int ipv6 = p->family == 6;
    if ((p->flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) != TCP_SYN || p->payload_len ||
        p->has_vlan || takers(l, ipv6) == 0)
        return 0;
    if (l->half_open >= c->syn_backlog) {
        dp->st.syn_declined++; /* Listener: SYN cookies take over, in Python */
        return 0;
    }
    struct dp_tcb t = ipv6 ? c->tmpl6 : c->tmpl;
    memset(t.local_ip, 0, sizeof t.local_ip);
    memset(t.remote_ip, 0, sizeof t.remote_ip);
    if (ipv6) {
        memcpy(t.local_ip, a6->dst, 16);
        memcpy(t.remote_ip, a6->src, 16);
    } else {
        memcpy(t.local_ip, &p->dst_ip, 4);
        memcpy(t.remote_ip, &p->src_ip, 4);
    }
    t.ipv6 = (uint8_t)ipv6;
    t.local_port = p->dst_port;
    t.remote_port = p->src_port;
    /* The SYN came from the next hop toward its sender, to us: the replies go back the
     * way it came (one interface, symmetric routing), with no neighbour lookup. */
    memcpy(t.src_mac, frame + p->dst_mac_off, 6);
    memcpy(t.dst_mac, frame + p->src_mac_off, 6);
    t.born = 1;
    t.tcp_state = DP_SYN_RECEIVED;
    t.app_fd = -1;
    t.ts_offset = c->ts_offset;
    t.iss = iss ? iss : dp_isn(c->isn_key, t.local_ip, p->dst_port, t.remote_ip, p->src_port,
                               ipv6 ? 16 : 4, now);
    t.snd_una = t.snd_nxt = t.snd_wl2 = t.cwnd_use_end = t.iss;
    t.time_wait_len = c->time_wait;
    t.fin_wait2_len = c->fin_wait2_timeout;
    t.last_send = now;
    struct dp_syn_offer offer = offer_of_listener(c);
    take_syn(dp, &t, p, &offer, now);
    struct flow *f = flow_insert(dp, &t);
    if (f == NULL) {
        dp->st.syn_declined++;
        return 0;
    }
    l->half_open++;
    dp->st.syn_received++;
    dp->st.born_live++;
    /* TcpConnection._transmit in SYN-RECEIVED: the SYN-ACK and its timer. */
    emit_synack(dp, f, now);
    f->t.snd_nxt = f->t.iss + 1;
    f->t.rto_at = now + rto_of(&f->t);
    timer_arm(dp, f, f->t.rto_at);
    return 1;
}

/* _on_rto in a handshake, before its SYN or SYN-ACK goes again: RttEstimator.backoff
 * (RFC 6298 §5.5), Karn's rule, and the timer re-armed. */
static void syn_backoff(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    double floored = t->base_rto > t->min_rto ? t->base_rto : t->min_rto;
    if (t->rto_backoff < 32 && floored * ldexp(1.0, (int)t->rto_backoff) < t->max_rto)
        t->rto_backoff++;
    t->rtt_timing = 0;
    t->rto_at = now + rto_of(t);
    timer_arm(dp, f, t->rto_at);
}

/* _on_rto in SYN-RECEIVED: the SYN-ACK again, backed off, or the half-open flow goes
 * (Listener drops it silently, as Linux's request sock). */
static void synack_timeout(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    struct listener *l = listener_of(dp, t->local_port);
    t->retries++;
    if (l == NULL || t->retries > l->cfg.max_syn_retries) {
        dp->st.synrcvd_timeouts++;
        born_end(dp, f);
        return;
    }
    dp->st.synack_retransmits++;
    syn_backoff(dp, f, now);
    emit_synack(dp, f, now);
}

/* --- active opens (dp_connect; TcpConnection.connect and _receive_syn_sent) -------- */

/* TcpConnection._segment with syn_options in SYN-SENT: our SYN, offering what the
 * configuration allows (options.syn_options with nothing to answer); its window is
 * never scaled (RFC 7323 §2.2) and it acknowledges nothing. */
static void emit_syn(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    struct wire_seg s;
    memset(&s, 0, sizeof s);
    s.seq = t->iss;
    s.flags = TCP_SYN;
    s.window = (uint16_t)umin(t->rcv_cap, 0xFFFF);
    s.syn_opts = WIRE_SYN_MSS | (f->offer.sack ? WIRE_SYN_SACK_PERM : 0) |
                 (f->offer.window_scaling ? WIRE_SYN_WSCALE : 0);
    s.mss = (uint16_t)t->cfg_mss;
    s.wscale = f->offer.window_scale_shift;
    if (f->offer.timestamps) {
        s.has_ts = 1;
        s.tsval = ts_clock(t, now);
        s.tsecr = 0;
    }
    if (arena_put_control(dp, f, &s)) {
        t->segs_out++;
        t->last_send = now;
    }
}

static int conn_name(const struct dp *dp, const struct dp_tcb *t, int mapped, uint64_t n,
                     char *buf, size_t cap);

/* Keep a failed active open's errno for dp_failures (the oldest goes when full), with
 * its owner and its socket's name. */
static void failure_note(struct dp *dp, const struct flow *f, int err)
{
    const struct dp_tcb *t = &f->t;
    if (dp->fail_count == DP_FAILURES_KEPT) {
        dp->fail_head = (dp->fail_head + 1) % DP_FAILURES_KEPT;
        dp->fail_count--;
        dp->st.failures_lost++;
    }
    struct dp_failure *e = &dp->failures[(dp->fail_head + dp->fail_count) % DP_FAILURES_KEPT];
    memcpy(e->local_ip, t->local_ip, 16);
    memcpy(e->remote_ip, t->remote_ip, 16);
    e->local_port = t->local_port;
    e->remote_port = t->remote_port;
    e->ipv6 = t->ipv6;
    e->err = err;
    e->app_uid = t->app_uid;
    int len = conn_name(dp, t, 0, f->name_n, e->name, sizeof e->name - 1);
    e->name[len > 0 ? len : 0] = '\0';
    dp->fail_count++;
}

/* TcpConnection._fail in SYN-SENT: the application learns it from its socket, which
 * closes (a reset, as the service's Python closes a failed connection's), and from
 * SO_ERROR, which the control plane answers from dp_failures. */
static void connect_failed(struct dp *dp, struct flow *f, int err)
{
    failure_note(dp, f, err);
    born_end(dp, f);
}

static void connect_dropped(struct dp *dp, struct flow *f)
{
    dp->st.connect_dropped++;
    born_end(dp, f);
}

/* TcpConnection._receive_syn_sent (RFC 9293 §3.10.7.3). Always taken: a SYN-SENT flow
 * is C's whatever comes. A simultaneous open (a SYN without ACK) is dropped: our SYN,
 * sent again, brings the peer's SYN-ACK (RFC 9293 §3.5 ends there too). */
static int synsent_input(struct dp *dp, struct flow *f, const struct wire_parsed *p,
                         double now)
{
    struct dp_tcb *t = &f->t;
    uint8_t flags = p->flags;
    if ((flags & TCP_ACK) && !(sdiff(p->ack, t->iss) > 0 && sdiff(p->ack, t->snd_nxt) <= 0)) {
        /* An ACK of something we never sent: <SEQ=SEG.ACK><CTL=RST>, unless a RST. */
        dp->st.synsent_dropped++;
        if (!(flags & TCP_RST))
            emit_rst(dp, f, p->ack);
        return 1;
    }
    if (flags & TCP_RST) {
        /* RFC 5961 §3.2: only a RST that acknowledges our SYN is believed. */
        if (flags & TCP_ACK) {
            dp->st.connect_refused++;
            connect_failed(dp, f, ECONNREFUSED);
        } else {
            dp->st.synsent_dropped++;
        }
        return 1;
    }
    if (!(flags & TCP_SYN) || !(flags & TCP_ACK)) {
        dp->st.synsent_dropped++;
        return 1;
    }
    take_syn(dp, t, p, &f->offer, now);
    /* The send ring's first byte is SND.UNA from here on: what the application wrote
     * meanwhile follows the SYN. */
    t->snd_una = p->ack;
    t->snd_wl2 = p->ack;
    t->cwnd_use_end = p->ack;
    if (t->retries == 0) /* _sample_rtt_handshake: Karn, no sample after a retransmission */
        rtt_sample(t, now - t->last_send > 0 ? now - t->last_send : 0.0);
    else if (t->srtt < 0 && t->base_rto < SYN_FALLBACK_RTO)
        t->base_rto = SYN_FALLBACK_RTO; /* RFC 6298 §5.7 */
    t->rto_backoff = 0;
    t->rto_at = 0;
    t->retries = 0;
    /* _established: a close the application made meanwhile goes on from here. */
    t->tcp_state = t->fin_queued ? DP_FIN_WAIT_1 : DP_ESTABLISHED;
    t->ack_now = 1; /* the handshake's third segment (data, if any, carries it) */
    t->segs_in++;
    dp->st.connect_established++;
    /* Payload or a FIN on the SYN-ACK is not taken: acknowledged only up to the SYN,
     * it comes again (a receiver may drop what it does not buffer). */
    return 1;
}

/* _on_rto in SYN-SENT: the SYN again, backed off, or the connection fails. */
static void syn_timeout(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    t->retries++;
    if (t->retries > f->max_syn_retries) {
        dp->st.connect_timeouts++;
        connect_failed(dp, f, ETIMEDOUT);
        return;
    }
    dp->st.syn_retransmits++;
    syn_backoff(dp, f, now);
    emit_syn(dp, f, now);
}

/* The socket pair of an active open: the service's end (nonblocking) bound to the name
 * that spells the 4-tuple, *n that name's N. 0 or -errno. */
static int connect_pair(struct dp *dp, const struct dp_tcb *t, int fds[2], uint64_t *n)
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        return -errno;
    struct sockaddr_un self = {.sun_family = AF_UNIX};
    *n = conn_name_next();
    int len = conn_name(dp, t, 0, *n, self.sun_path + 1, sizeof self.sun_path - 1);
    int rc = 0;
    if (len <= 0)
        rc = -ENAMETOOLONG;
    else if (bind(fds[0], (struct sockaddr *)&self,
                  (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len)) != 0 ||
             fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0)
        rc = -errno;
    if (rc < 0) {
        close(fds[0]);
        close(fds[1]);
    }
    return rc;
}

int64_t dp_connect(struct dp *dp, const struct dp_connect_cfg *cfg, double now,
                   int32_t *app_end)
{
    const struct dp_tcb *in = &cfg->tcb;
    *app_end = -1;
    if (in->local_port == 0 || in->remote_port == 0 || in->ipv6 > 1 ||
        !offer_ok(&cfg->offer) || !template_ok(dp, in, in->ipv6))
        return -EINVAL;
    struct tuple key = tuple_of(in);
    if (flow_lookup(dp, &key) != NULL)
        return -EEXIST;
    int fds[2];
    uint64_t name_n = 0;
    int rc = connect_pair(dp, in, fds, &name_n);
    if (rc < 0)
        return rc;
    struct dp_tcb t = *in;
    t.app_fd = fds[0];
    t.born = 1;
    t.active = 1;
    t.tcp_state = DP_SYN_SENT;
    t.snd_una = t.snd_wl2 = t.cwnd_use_end = t.iss;
    t.snd_nxt = t.iss + 1; /* the SYN's */
    t.retries = 0;
    t.last_send = now;
    t.fin_queued = t.fin_sent = t.peer_fin = t.fin_to_app = t.app_eof = 0;
    /* The receive ring is sized now, before the SYN-ACK says the scale: for the one
     * offered, whose rounding a window may use (take_syn then sets the slack agreed). */
    t.rcv_slack = cfg->offer.window_scaling ? (1u << cfg->offer.window_scale_shift) - 1 : 0;
    struct flow *f = flow_insert(dp, &t);
    if (f == NULL) {
        close(fds[0]);
        close(fds[1]);
        return -ENOSPC;
    }
    f->offer = cfg->offer;
    f->max_syn_retries = cfg->max_syn_retries;
    f->name_n = name_n;
    dp->st.born_live++;
    /* The application's claim (and bytes) are taken from now on: its verdict must not
     * wait for the handshake. */
    if (epoll_set(dp, f, APP_IN) < 0) {
        f->t.app_fd = -1;
        flow_forget(dp, f);
        close(fds[0]);
        close(fds[1]);
        return -EBADF;
    }
    dp->st.connects++;
    if (f->t.claim_wait) {
        f->t.claim_by = now + cfg->claim_wait_ms * 1e-3;
        timer_arm(dp, f, f->t.claim_by);
    }
    emit_syn(dp, f, now);
    f->t.rto_at = now + rto_of(&f->t);
    timer_arm(dp, f, f->t.rto_at);
    *app_end = fds[1];
    return handle_of(dp, f);
}

uint32_t dp_failures(struct dp *dp, struct dp_failure *out, uint32_t max)
{
    uint32_t n = 0;
    while (n < max && dp->fail_count > 0) {
        out[n++] = dp->failures[dp->fail_head];
        dp->fail_head = (dp->fail_head + 1) % DP_FAILURES_KEPT;
        dp->fail_count--;
    }
    return n;
}

#include "sessions.c"

/* The name writers of conn_name: each appends at p, never past end, and returns the
 * new end (end itself once full: the caller checks). snprintf cost 2% of the service's
 * CPU per connection under a connection-rate load (perf, 2026-12-03). */
static char *put_str(char *p, char *end, const char *s)
{
    while (*s && p < end)
        *p++ = *s++;
    return p;
}

static char *put_u64(char *p, char *end, uint64_t v)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && p < end)
        *p++ = digits[--n];
    return p;
}

/* A flow's address (16-byte form, ipv6 its family) as protocol.name_address spells it
 * for a socket of the application: an IPv4 one dotted for an AF_INET socket; an IPv6
 * one, or an IPv4 one for an AF_INET6 socket (mapped: the v4-mapped address, RFC 4291
 * §2.5.5.2), in base64url without padding, 22 characters. */
static char *put_addr(char *p, char *end, const uint8_t *b, int ipv6, int mapped)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if (ipv6 || mapped) {
        uint8_t a[18] = {[10] = 0xff, [11] = 0xff}; /* 16 bytes, 2 of zero padding */
        if (ipv6)
            memcpy(a, b, 16);
        else
            memcpy(a + 12, b, 4);
        for (int i = 0; i < 18 && p < end; i += 3) {
            uint32_t v = (uint32_t)a[i] << 16 | (uint32_t)a[i + 1] << 8 | a[i + 2];
            int chars = i == 15 ? 2 : 4; /* the last group holds one byte: 2 chars */
            for (int k = 0; k < chars && p < end; k++)
                *p++ = b64[(v >> (18 - 6 * k)) & 63];
        }
        return p;
    }
    for (int i = 0; i < 4; i++) {
        if (i)
            p = put_str(p, end, ".");
        p = put_u64(p, end, b[i]);
    }
    return p;
}

/* service/protocol.py connection_name: "joyride/c/LIP:LPORT/RIP:RPORT/PID.N" into buf
 * (cap bytes, no terminator), addresses as put_addr spells them. Returns its length,
 * or -1 if it does not fit. */
static int conn_name(const struct dp *dp, const struct dp_tcb *t, int mapped, uint64_t n,
                     char *buf, size_t cap)
{
    char *p = buf, *end = buf + cap;
    p = put_str(p, end, "joyride/c/");
    p = put_addr(p, end, t->local_ip, t->ipv6, mapped);
    p = put_str(p, end, ":");
    p = put_u64(p, end, t->local_port);
    p = put_str(p, end, "/");
    p = put_addr(p, end, t->remote_ip, t->ipv6, mapped);
    p = put_str(p, end, ":");
    p = put_u64(p, end, t->remote_port);
    p = put_str(p, end, "/");
    p = put_u64(p, end, (uint64_t)dp->pid);
    p = put_str(p, end, ".");
    p = put_u64(p, end, n);
    return p < end ? (int)(p - buf) : -1;
}

/* Datapath._deliver: a non-blocking unix connect, from a socket bound to the name that
 * spells the 4-tuple (service/protocol.py connection_name), to one of the port's
 * listeners, round robin. 0, or -errno when none took it. */
static int deliver(struct dp *dp, struct flow *f)
{
    struct dp_tcb *t = &f->t;
    struct listener *l = listener_of(dp, t->local_port);
    uint32_t names = l != NULL ? takers(l, t->ipv6) : 0;
    if (names == 0)
        return -ENOENT;
    int rc = -EAGAIN;
    for (uint32_t tries = 0; tries < l->cfg.n_names; tries++) {
        uint32_t which = l->rr++ % l->cfg.n_names;
        if (!((names >> which) & 1))
            continue; /* a listener of the other family */
        const char *target = l->cfg.names[which];
        /* Named as the target's socket reports it (v4-mapped for an AF_INET6 one). */
        struct sockaddr_un self = {.sun_family = AF_UNIX};
        int len = conn_name(dp, t, (l->cfg.mapped >> which) & 1, conn_name_next(),
                            self.sun_path + 1, sizeof self.sun_path - 1);
        if (len <= 0)
            return -ENAMETOOLONG;
        socklen_t self_len =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
        size_t n = strnlen(target, DP_NAME_BYTES - 1);
        struct sockaddr_un peer = {.sun_family = AF_UNIX};
        memcpy(peer.sun_path + 1, target, n);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        if (bind(fd, (struct sockaddr *)&self, self_len) < 0) {
            rc = -errno;
            close(fd);
            return rc;
        }
        if (connect(fd, (struct sockaddr *)&peer,
                    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) == 0) {
            t->app_fd = fd;
            /* Its application claims ring mode: nothing goes to it before its claim. */
            t->claim_check = t->claim_wait = (l->cfg.claims >> which) & 1;
            return 0;
        }
        rc = -errno; /* EAGAIN: its backlog is full; ECONNREFUSED: gone. The next one. */
        close(fd);
    }
    return rc;
}

static inline int in_window(uint32_t x, uint32_t base, uint32_t wnd)
{
    return (uint32_t)(x - base) < wnd;
}

/* TcpConnection._receive_synchronized in SYN-RECEIVED (RFC 9293 §3.10.7.4, RFC 5961,
 * RFC 7323 §5), then the delivery to the application. 1: taken (or dropped and
 * counted); 0: the flow, now established, goes to Python with this segment. */
static int synrcvd_input(struct dp *dp, struct flow *f, const struct wire_parsed *p,
                         const uint8_t *frame, double now)
{
    struct dp_tcb *t = &f->t;
    uint8_t flags = p->flags;
    int rst = (flags & TCP_RST) != 0;
    uint32_t seg_len = p->payload_len + !!(flags & TCP_SYN) + !!(flags & TCP_FIN);
    if (t->ts_ok && p->has_ts && !rst && sdiff(p->tsval, t->ts_recent) < 0) {
        if (now - t->ts_recent_age <= PAWS_IDLE) { /* RFC 7323 §5.3 R1: PAWS */
            dp->st.synrcvd_dropped++;
            t->ack_now = 1;
            return 1;
        }
        t->ts_recent = p->tsval; /* §5.5: TS.Recent went stale */
    }
    if ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN && p->seq == t->irs) {
        /* The peer retransmitted its SYN: our SYN-ACK was lost; send it again. */
        dp->st.syn_retransmits_received++;
        emit_synack(dp, f, now);
        return 1;
    }
    /* First check: acceptability. */
    int32_t w = sdiff(t->rcv_adv, t->rcv_nxt);
    uint32_t wnd = w > 0 ? (uint32_t)w : 0;
    int ok = seg_len == 0 ? (wnd == 0 ? p->seq == t->rcv_nxt : in_window(p->seq, t->rcv_nxt, wnd))
                          : wnd > 0 && (in_window(p->seq, t->rcv_nxt, wnd) ||
                                        in_window(p->seq + seg_len - 1, t->rcv_nxt, wnd));
    if (!ok) { /* dropped; an ACK answers it unless it was a RST */
        dp->st.synrcvd_dropped++;
        t->ack_now = !rst;
        return 1;
    }
    if (rst) { /* RFC 5961 §3.2: exactly at RCV.NXT it resets; else a challenge ACK */
        if (p->seq == t->rcv_nxt) {
            dp->st.synrcvd_reset++;
            born_end(dp, f);
            return 1;
        }
        dp->st.synrcvd_dropped++;
        t->ack_now = 1; /* Python limits challenge ACKs per second; C answers each */
        return 1;
    }
    if (flags & TCP_SYN || !(flags & TCP_ACK)) {
        dp->st.synrcvd_dropped++;
        t->ack_now = (flags & TCP_SYN) != 0; /* RFC 5961 §4: a challenge ACK */
        return 1;
    }
    /* RFC 7323 §4.3: TS.Recent from the segment that covers Last.ACK.sent. */
    if (t->ts_ok && p->has_ts && sdiff(p->seq, t->last_ack_sent) <= 0 &&
        sdiff(p->tsval, t->ts_recent) >= 0) {
        t->ts_recent = p->tsval;
        t->ts_recent_age = now;
    }
    if (p->ack != t->iss + 1) { /* not SND.UNA < SEG.ACK =< SND.NXT: <SEQ=SEG.ACK><RST> */
        dp->st.synrcvd_dropped++;
        emit_rst(dp, f, p->ack);
        return 1;
    }
    /* ESTABLISHED (TcpConnection._receive_synchronized, SYN-RECEIVED's ACK). */
    t->snd_una = p->ack;
    if (sdiff(p->ack, t->snd_nxt) > 0)
        t->snd_nxt = p->ack;
    t->snd_wnd = (uint32_t)p->window << t->snd_shift;
    t->max_snd_wnd = umax(t->max_snd_wnd, t->snd_wnd);
    t->snd_wl1 = p->seq;
    t->snd_wl2 = p->ack;
    if (t->retries == 0) /* _sample_rtt_handshake: Karn, no sample after a retransmission */
        rtt_sample(t, now - t->last_send > 0 ? now - t->last_send : 0.0);
    else if (t->srtt < 0 && t->base_rto < SYN_FALLBACK_RTO)
        t->base_rto = SYN_FALLBACK_RTO; /* RFC 6298 §5.7 */
    t->rto_backoff = 0;
    t->rto_at = 0;
    t->retries = 0;
    t->tcp_state = DP_ESTABLISHED;
    half_open_done(dp, f);
    dp->st.established++;
    t->segs_in++;
    if ((p->payload_len || flags & TCP_FIN) && !flow_input(dp, f, p, frame, now))
        return 0;
    if (deliver(dp, f) < 0) {
        dp->st.deliver_failed++;
        hand_back(dp, f, DP_REASON_UNDELIVERED); /* Python queues it and retries */
        return 1;
    }
    dp->st.delivered++;
    dp->st.delivered6 += t->ipv6;
    if (t->claim_wait) {
        struct listener *l = listener_of(dp, t->local_port);
        t->claim_by = now + (l ? l->cfg.claim_wait_ms : 0) * 1e-3;
        timer_arm(dp, f, t->claim_by);
    }
    if (epoll_set(dp, f, APP_IN) < 0) {
        hand_back(dp, f, DP_REASON_UNDELIVERED);
        return 1;
    }
    return 1;
}

/* TimeWait.receive (tcp/timewait.py, Linux's tcp_timewait_state_process): 0 keep,
 * 1 the flow ended (RST at RCV.NXT), 2 a SYN that may open a new incarnation. */
static int tw_input(struct dp *dp, struct flow *f, const struct wire_parsed *p, double now)
{
    struct dp_tcb *t = &f->t;
    uint8_t flags = p->flags;
    int rst = (flags & TCP_RST) != 0;
    uint32_t seg_len = p->payload_len + !!(flags & TCP_SYN) + !!(flags & TCP_FIN);
    int paws = t->ts_ok && p->has_ts && !rst && sdiff(p->tsval, t->ts_recent) < 0 &&
               now - t->ts_recent_age <= PAWS_IDLE;
    if (!paws && p->seq == t->rcv_nxt && (seg_len == 0 || rst)) {
        if (rst) { /* RFC 1337 H1, accepted as Linux does (tcp_rfc1337 = 0) */
            dp->st.tw_killed_by_rst++;
            born_end(dp, f);
            return 1;
        }
        t->state_at = now + t->time_wait_len;
        timer_arm(dp, f, t->state_at);
        if (p->has_ts && t->ts_ok) {
            t->ts_recent = p->tsval;
            t->ts_recent_age = now;
        }
        return 0;
    }
    if (flags & TCP_SYN && !(flags & (TCP_RST | TCP_ACK)) && !paws &&
        (t->ts_ok && p->has_ts ? sdiff(t->ts_recent, p->tsval) < 0
                               : sdiff(p->seq, t->rcv_nxt) > 0)) {
        dp->st.tw_reuse++; /* RFC 6191 §2 */
        return 2;
    }
    if (rst)
        return 0;
    if (paws || flags & TCP_ACK) {
        t->state_at = now + t->time_wait_len;
        timer_arm(dp, f, t->state_at);
    }
    if (seg_len == 0 || flags & TCP_SYN) { /* Linux's tcp_oow_rate_limited */
        if (now - f->tw_last_oow < OOW_ACK_INTERVAL)
            return 0;
        f->tw_last_oow = now;
    }
    /* TimeWait.ack: SND.NXT / RCV.NXT with the record's window. */
    struct wire_seg s;
    memset(&s, 0, sizeof s);
    s.seq = t->snd_nxt;
    s.ack = t->rcv_nxt;
    s.flags = TCP_ACK;
    s.window = f->tw_window;
    if (t->ts_ok) {
        s.has_ts = 1;
        s.tsval = ts_clock(t, now);
        s.tsecr = t->ts_recent;
    }
    if (arena_put_control(dp, f, &s))
        dp->st.tw_acks++;
    return 0;
}

/* --- the round ----------------------------------------------------------------------- */

static void decline(struct dp *dp, const uint8_t *frame, uint32_t len)
{
    if (dp->n_dec == dp->cfg.decline_frames || len > dp->cfg.max_frame) {
        dp->st.declined_overflow++;
        return;
    }
    uint32_t k = dp->n_dec++;
    memcpy(dp->dec + dp->dec_offs[k], frame, len);
    dp->dec_lens[k] = len;
    dp->st.declined++;
}

/* The frames at base + dp->rx_offs[i], dp->rx_lens[i] (i < n), parsed into dp->parsed:
 * each to its flow, a listener, or Python. Shared by a port's batch and the frames
 * another worker forwarded (dp_inject). */
static void input_frames(struct dp *dp, const uint8_t *base, uint32_t n, double now)
{
    for (uint32_t i = 0; i < n; i++) {
        const struct wire_parsed *p = &dp->parsed[i];
        const uint8_t *frame = base + dp->rx_offs[i];
        struct tuple key = tuple_rx(p, &dp->parsed6[i]);
        struct flow *f = p->reason == WIRE_OK ? flow_lookup(dp, &key) : NULL;
        if (f != NULL && f->seen_window != dp->flows_window) {
            f->seen_window = dp->flows_window;
            dp->flows_now++;
        }
        if (f == NULL && p->reason == WIRE_OK) {
            struct listener *l = listener_of(dp, p->dst_port);
            if (l != NULL && syn_input(dp, l, p, &dp->parsed6[i], frame, now, 0)) {
                dp->st.rx_fast++;
                continue;
            }
        }
        if (f == NULL || f->state != FLOW_C) {
            dp->st.declined_no_flow += f == NULL;
            decline(dp, frame, dp->rx_lens[i]);
            continue;
        }
        int taken;
        if (f->t.tcp_state == DP_SYN_RECEIVED) {
            taken = synrcvd_input(dp, f, p, frame, now);
        } else if (f->t.tcp_state == DP_SYN_SENT) {
            taken = synsent_input(dp, f, p, now);
        } else if (f->t.tcp_state == DP_TIME_WAIT) {
            int verdict = tw_input(dp, f, p, now);
            if (verdict == 2) {
                /* A new incarnation (RFC 6191): past the old SND.NXT, as Linux. */
                uint32_t iss = f->t.snd_nxt + REUSE_ISS_GAP;
                born_end(dp, f);
                struct listener *l = listener_of(dp, p->dst_port);
                if (l == NULL ||
                    !syn_input(dp, l, p, &dp->parsed6[i], frame, now, iss ? iss : 1))
                    decline(dp, frame, dp->rx_lens[i]);
                continue;
            }
            dp->st.rx_fast++;
            continue;
        } else if (f->t.tcp_state == DP_CLOSED) {
            taken = 0; /* Python answers it as for no connection */
        } else {
            taken = flow_input(dp, f, p, frame, now);
        }
        if (taken) {
            dp->st.rx_fast++;
            if (f->state == FLOW_C)
                touch(dp, f);
            continue;
        }
        /* The flow's earlier segments are done; what they owe (an ACK, bytes for the
         * application) goes to Python with the flow, which takes it before this one. */
        dp->st.declined_segment++;
        hand_back(dp, f, DP_REASON_SEGMENT);
        decline(dp, frame, dp->rx_lens[i]);
    }
}

/* One batch from port index; how many frames it held. */
static uint32_t receive_port(struct dp *dp, uint32_t index, double now)
{
    struct dp_port *port = &dp->ports[index];
    int got = ((rx_fn)port->rx)(port->ctx, dp->descs, dp->cfg.batch, 0);
    if (got <= 0)
        return 0;
    uint32_t n = (uint32_t)got;
    dp->st.rx_frames += n;
    dp->st.port_rx_frames[index] += n;
    dp->st.port_rx_batches[index]++;
    for (uint32_t i = 0; i < n; i++) {
        dp->rx_offs[i] = dp->descs[i].addr;
        dp->rx_lens[i] = dp->descs[i].len;
        dp->st.port_rx_bytes[index] += dp->descs[i].len;
    }
    wire_parse_batch6(port->umem, dp->rx_offs, dp->rx_lens, n, dp->cfg.verify_checksums,
                      dp->parsed, dp->parsed6);
    if (dp->cap)
        cap_frames(dp->cap, port->umem, dp->rx_offs, dp->rx_lens, n);
    input_frames(dp, port->umem, n, now);
    ((release_fn)port->release)(port->ctx, dp->descs, n);
    return n;
}

/* The frames other workers forwarded (dp_forward_declined), before the ports' new ones:
 * they arrived earlier. Not captured again: the tap of the worker that received them
 * saw them then. */
static void receive_injected(struct dp *dp, double now)
{
    uint32_t n = dp->n_inj;
    if (n == 0)
        return;
    dp->n_inj = 0;
    for (uint32_t i = 0; i < n; i++) {
        dp->rx_offs[i] = (uint64_t)i * dp->cfg.max_frame;
        dp->rx_lens[i] = dp->inj_lens[i];
    }
    wire_parse_batch6(dp->inj, dp->rx_offs, dp->rx_lens, n, dp->cfg.verify_checksums,
                      dp->parsed, dp->parsed6);
    input_frames(dp, dp->inj, n, now);
}

/* TcpConnection._fire for the timers C runs: a due delayed ACK is sent; a due RTO,
 * loss probe (RFC 8985 §7.3) or keepalive hands the flow back (recovery and probes
 * are Python's). */
static void fire_due(struct dp *dp, struct flow *f, double now)
{
    struct dp_tcb *t = &f->t;
    if (t->claim_wait && now >= t->claim_by) {
        /* No claim came (a process without the shim): a stream, from now on. */
        t->claim_wait = 0;
        dp->st.claim_deadlines++;
        touch(dp, f);
    }
    if (t->tcp_state == DP_SYN_RECEIVED) {
        if (t->rto_at && now >= t->rto_at)
            synack_timeout(dp, f, now);
        return;
    }
    if (t->tcp_state == DP_SYN_SENT) {
        if (t->rto_at && now >= t->rto_at)
            syn_timeout(dp, f, now);
        return;
    }
    if (t->state_at && now >= t->state_at) {
        /* 2*MSL over, or the FIN-WAIT-2 timer: the connection is gone (no RST). */
        if (t->tcp_state == DP_TIME_WAIT)
            dp->st.tw_expired++;
        else
            dp->st.fin_wait2_timeouts++;
        born_end(dp, f);
        return;
    }
    if (t->rack_timeout && now >= t->rack_timeout) {
        hand_back(dp, f, DP_REASON_REORDER); /* RACK detects again: Python's */
        return;
    }
    if ((t->rto_at && now >= t->rto_at) || (t->pto_at && now >= t->pto_at)) {
        if (f->data_in_arena) {
            /* Linux's skb_still_in_host_queue: a segment that has not left this host
             * cannot have been lost; look again once the NIC has taken it. (An ACK
             * that waits says nothing about the data: one owed at once is queued
             * mid-round, before the timers.) */
            double again = now + HOST_QUEUE_RECHECK;
            if (t->rto_at && now >= t->rto_at)
                t->rto_at = again;
            if (t->pto_at && now >= t->pto_at)
                t->pto_at = again;
            timer_arm(dp, f, again);
            dp->st.timers_host_queued++;
            return;
        }
        hand_back(dp, f, DP_REASON_RTO);
        return;
    }
    if (t->keepalive_at && now >= t->keepalive_at) {
        hand_back(dp, f, DP_REASON_KEEPALIVE);
        return;
    }
    if (t->delack_at && now >= t->delack_at) {
        t->delack_at = 0;
        t->ack_now = 1;
        touch(dp, f);
    }
}

/* Visit one bucket at tick: flows due fire, flows whose deadline moved later move to
 * its bucket, flows due on a later turn stay. */
static void run_bucket(struct dp *dp, uint64_t tick, double now)
{
    uint32_t next = dp->wheel[tick & WHEEL_MASK];
    while (next) {
        struct flow *f = &dp->flows[next - 1];
        next = f->wheel_next; /* f may leave or move this bucket below */
        if (tick_of(f->wheel_at) > tick)
            continue; /* a later turn */
        double due = earliest_deadline(&f->t);
        if (due != 0 && due <= now) {
            fire_due(dp, f, now);
            if (f->state != FLOW_C)
                continue; /* handed back: out of the wheel */
            due = earliest_deadline(&f->t);
        }
        if (due == f->wheel_at)
            continue; /* not due yet, this very millisecond: looked at again next round */
        wheel_unlink(dp, f);
        if (due != 0)
            wheel_link(dp, f, due);
    }
}

/* Run every bucket from the last tick run through the current one. The current tick's
 * bucket is run again next round (its deadlines may lie later in this millisecond). */
static void run_timers(struct dp *dp, double now)
{
    uint64_t now_tick = tick_of(now);
    if (dp->wheel_count == 0) {
        dp->wheel_tick = now_tick;
        return;
    }
    uint64_t from = dp->wheel_tick;
    if (now_tick - from >= WHEEL_SLOTS)
        from = now_tick - (WHEEL_SLOTS - 1); /* a whole turn: every bucket once */
    for (uint64_t tick = from; tick <= now_tick; tick++)
        run_bucket(dp, tick, now);
    dp->wheel_tick = now_tick;
}

/* When the loop must wake for a timer (0: none): the first non-empty bucket's earliest
 * entry, searched one turn ahead; beyond that, a turn from now. The search walks every
 * entry of the buckets it passes, so its answer is kept (wake_hint) until now reaches
 * it: wheel_link lowers it for an earlier entry, and an entry removed can only make it
 * early, which costs one wake-up and a new search. Searched on every sleep, it took 64%
 * of the service's time under iperf3 after a connection-rate run had left 30,000
 * TIME-WAIT flows in the wheel (each bucket's list holding ~30 far deadlines). */
static double next_wake(struct dp *dp, double now)
{
    if (dp->wheel_count == 0) {
        dp->wake_hint = 0;
        return 0;
    }
    if (dp->wake_hint != 0 && now < dp->wake_hint)
        return dp->wake_hint;
    double wake = now + WHEEL_SLOTS * 1e-3;
    uint64_t start = tick_of(now);
    for (uint64_t tick = start; tick < start + WHEEL_SLOTS; tick++) {
        double first = 0;
        for (uint32_t i = dp->wheel[tick & WHEEL_MASK]; i; i = dp->flows[i - 1].wheel_next) {
            double at = dp->flows[i - 1].wheel_at;
            if (tick_of(at) <= tick && (first == 0 || at < first))
                first = at;
        }
        if (first != 0) {
            wake = first;
            break;
        }
    }
    dp->wake_hint = wake;
    return wake;
}

static void transmit_touched(struct dp *dp, double now)
{
    for (uint32_t i = 0; i < dp->n_touched; i++) {
        struct flow *f = &dp->flows[dp->touched[i]];
        f->touched = 0;
        if (f->state != FLOW_C)
            continue;
        if (f->app_readable && f->t.chan)
            app_read(dp, f); /* a channel's bytes found since the round's reads */
        if (f->state != FLOW_C)
            continue;
        app_write(dp, f, now);
        if (f->state == FLOW_C)
            flow_output(dp, f, now);
        /* Reading resumes once ACKs freed room in a full send ring. */
        if (f->state == FLOW_C && !f->t.app_eof && f->snd.len < f->snd.cap &&
            !(f->epoll_mask & EPOLLIN)) {
            epoll_set(dp, f, f->epoll_mask | APP_IN); /* chan_settle looks at tx */
        }
        chan_settle(dp, f);
        born_settle(dp, f, now);
    }
    dp->n_touched = 0;
    arena_flush(dp);
    dp_kick(dp);
}

/* Frames a full NIC left in the arena go first; then, as far as the room goes, the
 * flows at the head of the wait list run their output before this round's others. */
static void tx_resume(struct dp *dp)
{
    dp->tx_full = 0;
    dp->room_ready = 0;
    arena_flush(dp);
    uint32_t limit = data_slots(dp);
    if (dp->arena_used >= limit)
        return;
    uint32_t serve = (limit - dp->arena_used + TX_QUANTUM - 1) / TX_QUANTUM;
    while (serve > 0 && dp->n_tx_wait > 0) {
        struct flow *f = &dp->flows[dp->tx_wait[dp->tx_wait_head]];
        dp->tx_wait_head = (dp->tx_wait_head + 1) % dp->cfg.max_flows;
        dp->n_tx_wait--;
        f->tx_waiting = 0;
        if (f->state == FLOW_C) { /* a stale entry (handed back, ended) costs no turn */
            touch(dp, f);
            serve--;
        }
    }
}

/* Ask the first port to say when it has room only while something waits for it
 * (dataplane.h, room_fd): its tx thread tells through room_fd, once per question; or
 * EPOLLOUT on its fd (room_polled), which level-triggered would otherwise wake every
 * epoll_wait; or neither, and dp_run looks again within a millisecond. */
static void tx_want_room(struct dp *dp)
{
    int want = dp->n_tx_wait > 0 || dp->arena_used > 0;
    struct dp_port *p = &dp->ports[0];
    if (dp->n_ports == 0)
        return;
    if (p->room_fd >= 0) {
        /* Told once per question: ask again after every answer, drain it when done. */
        if (want == dp->out_armed && !dp->room_told)
            return;
        dp->room_told = 0;
        int r = ((want_room_fn)p->want_room)(p->ctx, want);
        dp->out_armed = want && r == 0;
        dp->room_ready = want && r > 0;
        return;
    }
    if (p->fd < 0 || !p->room_polled || want == dp->out_armed)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),
                             .data.u64 = TAG_PORT | 0};
    if (epoll_ctl(dp->epfd, EPOLL_CTL_MOD, p->fd, &ev) == 0)
        dp->out_armed = want;
}

static int round_at(struct dp *dp, double now)
{
    size_t before = dp->st.rx_frames + dp->st.app_reads;
    uint32_t injected = dp->n_inj; /* frames another worker gave: work, as received ones */
    for (uint32_t i = 0; i < dp->n_again; i++) {
        struct flow *f = &dp->flows[dp->again[i]];
        f->chan_again = 0;
        if (f->state == FLOW_C)
            touch(dp, f);
    }
    dp->n_again = 0;
    if (dp->door_rung)
        door_rung(dp);
    ringpoll_scan(dp);
    tx_resume(dp);
    receive_injected(dp, now);
    /* Up to cfg.rx_batches full batches a port: a round whose transmit takes long (a
     * burst of data segments) must not leave the ACKs that clock it queued in the rx
     * ring until the ring overflows (NAPI's budget, for the same reason). */
    for (uint32_t i = 0; i < dp->n_ports; i++) {
        for (uint32_t b = 0; b < dp->cfg.rx_batches; b++) {
            if (dp->cfg.decline_frames - dp->n_dec < dp->cfg.batch)
                break; /* Python first: the rest waits in the rx rings, nothing is lost */
            if (receive_port(dp, i, now) < dp->cfg.batch)
                break;
        }
    }
    for (uint32_t i = 0; i < dp->n_touched; i++) {
        struct flow *f = &dp->flows[dp->touched[i]];
        if (f->app_readable)
            app_read(dp, f);
    }
    run_timers(dp, now);
    transmit_touched(dp, now);
    tx_want_room(dp);
    dp->st.rounds++;
    int wake = 0;
    if (dp->n_dec)
        wake |= DP_WAKE_DECLINED;
    if (dp->n_handbacks)
        wake |= DP_WAKE_HANDBACK;
    int busy = injected || dp->st.rx_frames + dp->st.app_reads != before;
    return wake | (busy ? ROUND_BUSY : 0);
}

/* What epoll reported: the application descriptors' readiness and Python's poller. */
static int take_events(struct dp *dp, const struct epoll_event *evs, int nev, double now)
{
    int wake = 0;
    for (int e = 0; e < nev; e++) {
        uint64_t tag = evs[e].data.u64;
        if (tag & TAG_WATCH) {
            wake |= DP_WAKE_WATCHED;
        } else if (tag & TAG_DOOR) {
            uint64_t count;
            ssize_t r = read(dp->door->efd, &count, sizeof count); /* EAGAIN: taken */
            (void)r;
            dp->door_rung = 1;
            if (dp->door_python)
                wake |= DP_WAKE_DOOR;
        } else if (tag & TAG_ADOOR) {
            /* An application rang its arena's door: every flow armed in door mode is
             * looked at (door_rung). A datagram a call; what is left keeps it readable.
             * A door its application shut (or broke) would be readable for ever: it is
             * dropped, and the arena's flows go back to socket arms. */
            if (chan_door_rang(dp, (uint32_t)tag, evs[e].events))
                wake |= DP_WAKE_DOOR; /* a pump slept on it (dp_chan_wait_door) */
            dp->door_rung = 1;
            dp->st.chan_door_rings++;
        } else if (tag & TAG_SESSION) {
            wake |= sessions_event(dp, (uint32_t)tag, now);
        } else if (tag & TAG_ROOM) {
            dp->room_told = 1; /* tx_resume takes the room; tx_want_room drains the fd */
        } else if (tag & TAG_FLOW) {
            struct flow *f = &dp->flows[(uint32_t)tag];
            if (f->state != FLOW_C)
                continue;
            if (evs[e].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                f->app_readable = 1;
            if ((evs[e].events & EPOLLIN) && f->t.chan) {
                f->app_rung = 1;
                dp->st.chan_socket_rings++;
            }
            if (evs[e].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                f->app_hup = 1;
            /* A unix stream reports EPOLLHUP once both directions are shut: before our
             * own shutdown(SHUT_WR) (fin_to_app), only by the application's close. */
            if (evs[e].events & EPOLLHUP)
                f->app_closed = 1;
            /* A unix stream closed with bytes in its receive queue sets its peer's
             * sk_err (ECONNRESET), which epoll reports as EPOLLERR. */
            if (evs[e].events & EPOLLERR)
                f->app_err = 1;
            touch(dp, f); /* EPOLLOUT: app_write in transmit_touched */
        }
    }
    return wake;
}

int dp_settle(struct dp *dp)
{
    /* ringpoll_settle's answer: work came while arming, or a flow waits for Python. */
    return dp->n_ringpoll ? ringpoll_settle(dp) : 0;
}

int dp_round(struct dp *dp, double now)
{
    struct epoll_event evs[MAX_EVENTS];
    int nev = epoll_wait(dp->epfd, evs, MAX_EVENTS, 0);
    int wake = take_events(dp, evs, nev > 0 ? nev : 0, now);
    return (wake | round_at(dp, now)) & 0xFF;
}

/* Adaptive spinning. A spin pays when the loop's idle periods end soon: the
 * application's answer to what was just delivered, the next request of a client that
 * waits for each answer. It wastes a CPU when they do not: an application busy for a
 * millisecond with a batch, a client that thinks. How soon "soon" is depends on the
 * machine: a fixed 50 us caught nginx's answers on one 2-vCPU machine and none on the
 * next, where system calls cost three times as much (docs/dataplane.md, "Spinning").
 * So the spin lasts a window sized by the periods themselves, as KVM's halt polling
 * sizes its poll (dp_spin_window): each period, as it ends, spun or slept through alike,
 * keeps the window, doubles it or halves it, within the configured cap. A window of 0
 * is a stopped spin; a slept-through period short enough (it includes the wake-up's
 * own latency) starts it again, and so does a probe: with a cap below that latency no
 * slept period could, so every SPIN_PROBE_EVERY-th chance while stopped spins the
 * smallest window anyway, and one that catches its period's end grows it. */
#define SPIN_GROW_START 20e-6
#define SPIN_PROBE_EVERY 16

double dp_spin_window(double window, double period, double cap)
{
    if (window > cap)
        window = cap;
    if (period <= window)
        return window;
    if (period <= cap) {
        window = window < SPIN_GROW_START ? SPIN_GROW_START : 2 * window;
        return window > cap ? cap : window;
    }
    window /= 2;
    return window < SPIN_GROW_START ? 0.0 : window;
}

/* A spin is for latency: one or two flows, each waiting for the other side's answer
 * (a ping-pong, a client with one connection). With more flows busy within a
 * millisecond the loop has a batch in each wake-up anyway, and a spin would only take
 * CPU from the applications and clients that make them (measured: redis-benchmark with
 * 50 connections lost a tenth of its rate to a 50 us spin, docs/dataplane.md). */
#define SPIN_MAX_FLOWS 2
#define SPIN_FLOWS_WINDOW 1e-3

/* Whether more flows than SPIN_MAX_FLOWS received segments in this millisecond's window
 * or the last one's. */
static int flows_many(struct dp *dp, double now)
{
    if (now - dp->flows_window_at >= SPIN_FLOWS_WINDOW) {
        int skipped = now - dp->flows_window_at >= 2 * SPIN_FLOWS_WINDOW;
        dp->flows_before = skipped ? 0 : dp->flows_now; /* a quiet window counts none */
        dp->flows_now = 0;
        dp->flows_window++;
        dp->flows_window_at = now;
    }
    return (dp->flows_now > dp->flows_before ? dp->flows_now : dp->flows_before) >
           SPIN_MAX_FLOWS;
}

/* Whether some task waits for a CPU: more runnable tasks (this thread included) than
 * CPUs, from /proc/loadavg's "running/total" (the kernel's nr_running()), looked at
 * once a millisecond at most. A spinning loop would keep a CPU from that task (the
 * application, its clients, the softirq that moves our frames); sched_yield hands over
 * only to tasks queued on the spinner's own CPU. */
static int cpus_wanted(struct dp *dp, double now)
{
    if (dp->load_fd < 0)
        return 0;
    if (now - dp->load_at < 1e-3)
        return dp->load_busy;
    dp->load_at = now;
    char buf[128];
    ssize_t n = pread(dp->load_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return dp->load_busy = 0;
    buf[n] = 0;
    const char *slash = strchr(buf, '/');
    if (slash == NULL)
        return dp->load_busy = 0;
    const char *p = slash;
    while (p > buf && p[-1] != ' ')
        p--;
    return dp->load_busy = strtol(p, NULL, 10) > dp->n_cpus;
}

static double spin_for(struct dp *dp, double now)
{
    double spin = dp->spin_window;
    if (spin == 0) { /* stopped (or no spin configured): a probe now and then */
        if (dp->cfg.spin_ns == 0 || ++dp->spin_stopped % SPIN_PROBE_EVERY)
            return 0.0;
        spin = fmin(SPIN_GROW_START, dp->cfg.spin_ns * 1e-9);
    }
    if (flows_many(dp, now)) {
        dp->st.spins_skipped_flows++;
        return 0.0;
    }
    if (cpus_wanted(dp, now)) {
        dp->st.spins_skipped_busy++;
        return 0.0;
    }
    return spin;
}

static void idle_ended(struct dp *dp, double now)
{
    if (dp->idle_from == 0 || dp->cfg.spin_ns == 0) {
        dp->idle_from = 0;
        return;
    }
    double period = now - dp->idle_from, was = dp->spin_window;
    dp->idle_from = 0;
    dp->spin_window = dp_spin_window(was, period, dp->cfg.spin_ns * 1e-9);
    if (period <= was) {
        dp->st.idle_short++;
        return;
    }
    dp->st.idle_long++;
    dp->st.spin_grown += dp->spin_window > was;
    dp->st.spin_shrunk += dp->spin_window < was;
}

int dp_run(struct dp *dp, int timeout_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    double start = monotonic_now();
    double deadline = timeout_ms < 0 ? INFINITY : start + timeout_ms * 1e-3;
    /* Entered after Python's work: a spin, unless the loop was idle when it left. */
    double spin_until = start + (dp->idle_from != 0 ? 0.0 : spin_for(dp, start));
    dp->st.returns++;
    for (;;) {
        double now = monotonic_now();
        int wait_ms = 0;
        if (now >= spin_until) {
            double until = deadline;
            double timer = next_wake(dp, now);
            if (timer != 0 && timer < until)
                until = timer;
            double ms = (until - now) * 1e3;
            wait_ms = ms <= 0 ? 0 : (ms > 1e6 ? 1000000 : (int)ceil(ms));
            /* Frames or flows wait for the NIC: EPOLLOUT says when its ring has room
             * (a copy-mode kick that met a transient error leaves frames on the ring
             * and no wake-up to come), so look again within a millisecond anyway. */
            if ((dp->n_tx_wait || dp->arena_used) && wait_ms > 1)
                wait_ms = 1;
            if (timeout_ms == 0 || dp->n_again || dp->room_ready || dp->n_inj)
                wait_ms = 0;
            if (wait_ms && dp->n_ringpoll && ringpoll_settle(dp))
                wait_ms = 0; /* arming found work */
        } else if (timeout_ms != 0 && dp->idle_from != 0 && !dp->n_again && !dp->room_ready) {
            /* Spinning, and the last look found nothing: a task that can run on this
             * CPU goes first (the application, its client), so the spin takes only an
             * idle CPU. (Right after a round with work, look again at once.) */
            sched_yield();
            dp->st.spin_yields++;
        }
        if (wait_ms) {
            dp->st.sleeps++;
            if (dp->idle_from == 0)
                dp->idle_from = now; /* an idle period starts without a spin */
        }
        int nev = epoll_wait(dp->epfd, evs, MAX_EVENTS, wait_ms);
        if (nev < 0 && errno != EINTR)
            return -errno;
        if (nev < 0) {
            /* A signal: Python runs its handler only once we return (the service's
             * SIGTERM handler asks the loop to stop). */
            dp->st.returns_timeout++;
            return DP_WAKE_TIMEOUT;
        }
        now = monotonic_now();
        int wake = take_events(dp, evs, nev > 0 ? nev : 0, now);
        int r = round_at(dp, now);
        if (now >= dp->arenas_trim_at) {
            dp_chan_trim(dp);
            dp->arenas_trim_at = now + ARENA_TRIM_SECONDS;
        }
        wake |= r & 0xFF;
        if (r & ROUND_BUSY || nev > 0) {
            idle_ended(dp, now);
            spin_until = now + spin_for(dp, now);
        } else if (dp->idle_from == 0) {
            dp->idle_from = now;
        }
        if (!wake && (timeout_ms == 0 || now >= deadline))
            wake = DP_WAKE_TIMEOUT;
        if (wake) {
            dp->st.returns_declined += !!(wake & DP_WAKE_DECLINED);
            dp->st.returns_handback += !!(wake & DP_WAKE_HANDBACK);
            dp->st.returns_watched += !!(wake & DP_WAKE_WATCHED);
            dp->st.returns_timeout += !!(wake & DP_WAKE_TIMEOUT);
            return wake;
        }
    }
}

/* --- Python's side ------------------------------------------------------------------ */

uint32_t dp_transmit(struct dp *dp, const uint8_t *base, const uint64_t *offs,
                     const uint32_t *lens, uint32_t n)
{
    /* C's frames of this round first: per-flow order is kept. What a full NIC leaves
     * of them waits in the arena, and Python's frames (other flows, or a handed-back
     * flow's later segments, which TCP takes reordered) go ahead: Python keeps no
     * queue of its own, so they wait for the drain here. */
    arena_flush(dp);
    if (n == 0 || dp->n_ports == 0)
        return 0;
    struct dp_port *p = &dp->ports[0];
    int sent = ((tx_copy_fn)p->tx_copy)(p->ctx, p->umem, p->tx_offset, base, offs, lens, n,
                                        DP_TX_QUEUE);
    dp->kick_owed = 1;
    uint32_t ok = sent > 0 ? (uint32_t)sent : 0;
    if (ok && p->tx_placed)
        dp->py_mark = *p->tx_placed;
    if (dp->cap)
        cap_frames(dp->cap, base, offs, lens, ok);
    dp->st.tx_frames += ok;
    dp->st.tx_dropped += n - ok;
    return ok;
}

void dp_kick(struct dp *dp)
{
    if (!dp->kick_owed || dp->n_ports == 0)
        return;
    dp->kick_owed = 0;
    struct dp_port *p = &dp->ports[0];
    ((kick_fn)p->kick)(p->ctx);
    if (p->complete)
        ((complete_fn)p->complete)(p->ctx, 1u << 20);
}

uint32_t dp_handbacks(struct dp *dp, int64_t *out, uint32_t max)
{
    uint32_t n = umin(max, dp->n_handbacks);
    memcpy(out, dp->handbacks, n * sizeof *out);
    memmove(dp->handbacks, dp->handbacks + n, (dp->n_handbacks - n) * sizeof *out);
    dp->n_handbacks -= n;
    return n;
}

uint32_t dp_declined(struct dp *dp, uint8_t **base, uint64_t **offs, uint32_t **lens)
{
    *base = dp->dec;
    *offs = dp->dec_offs;
    *lens = dp->dec_lens;
    return dp->n_dec;
}

void dp_declined_clear(struct dp *dp) { dp->n_dec = 0; }

int dp_inject(struct dp *dp, const uint8_t *frame, uint32_t len)
{
    if (len > dp->cfg.max_frame)
        return -EMSGSIZE;
    if (dp->n_inj == dp->cfg.batch)
        return -ENOBUFS;
    memcpy(dp->inj + (size_t)dp->n_inj * dp->cfg.max_frame, frame, len);
    dp->inj_lens[dp->n_inj++] = len;
    dp->st.injected++;
    return 0;
}

/* Whether `to` holds the flow of the parsed frame half-open (SYN-RECEIVED, or SYN-SENT: an
 * active open whose SYN-ACK reached another queue): C runs its handshake, and
 * the control plane cannot take it from C (plane.py's UNRUNNABLE_STATES). A TIME-WAIT
 * flow is not forwarded: a segment another worker declined may be a new incarnation's
 * that Python runs (its SYN declined there), and TIME-WAIT's answer to a stray segment
 * matters less than a handshake. */
static int holds_half_open(struct dp *to, const struct tuple *key)
{
    struct flow *f = flow_lookup(to, key);
    return f != NULL && f->state == FLOW_C &&
           (f->t.tcp_state == DP_SYN_RECEIVED || f->t.tcp_state == DP_SYN_SENT);
}

/* The plane (not `from`) that holds the flow of a frame `from` declined half-open, or
 * NULL. Only a frame `from` has no flow for: one it has (handed back: Python's) is that
 * flow's, whatever another plane holds. */
static struct dp *half_open_owner(struct dp *from, struct dp *const *planes, uint32_t n,
                                  const uint8_t *frame, uint32_t len)
{
    uint64_t zero = 0;
    struct wire_parsed p;
    struct wire_addr6 a6;
    /* Checksums were verified (or not, by the setting) when the frame came in. */
    if (wire_parse_batch6(frame, &zero, &len, 1, 0, &p, &a6) != 1 || p.reason != WIRE_OK)
        return NULL;
    struct tuple key = tuple_rx(&p, &a6);
    if (flow_lookup(from, &key) != NULL)
        return NULL;
    for (uint32_t j = 0; j < n; j++)
        if (planes[j] != from && holds_half_open(planes[j], &key))
            return planes[j];
    return NULL;
}

uint32_t dp_forward_declined(struct dp *from, struct dp *const *planes, uint32_t n)
{
    uint32_t kept = 0, moved = 0;
    for (uint32_t i = 0; i < from->n_dec; i++) {
        const uint8_t *frame = from->dec + from->dec_offs[i];
        uint32_t len = from->dec_lens[i];
        struct dp *owner = half_open_owner(from, planes, n, frame, len);
        if (owner != NULL) {
            /* Its worker runs the segment next round; a full queue drops it, as a full
             * NIC ring would, and the peer sends it again. */
            if (dp_inject(owner, frame, len) != 0)
                from->st.forward_dropped++;
            moved++;
            continue;
        }
        if (kept != i) { /* keep the order Python reads the rest in */
            memmove(from->dec + from->dec_offs[kept], frame, len);
            from->dec_lens[kept] = len;
        }
        kept++;
    }
    from->n_dec = kept;
    from->st.forwarded += moved;
    return moved;
}

/* A free slot for a new flow: the oldest TIME-WAIT flow gives its own up when none is
 * left (engine.py's rule for its records). NULL: the table is full of live flows. */
static struct flow *flow_slot(struct dp *dp)
{
    while (dp->n_free == 0 && dp->tw_count) {
        int64_t h = dp->tw_fifo[dp->tw_head];
        dp->tw_head = (dp->tw_head + 1) % dp->cfg.max_flows;
        dp->tw_count--;
        if (tw_entry_live(dp, h)) {
            born_end(dp, flow_of(dp, h));
            dp->st.tw_overflow++;
        }
    }
    if (dp->n_free == 0)
        return NULL;
    return &dp->flows[dp->free_slots[dp->n_free - 1]];
}

/* Put a flow with TCB tcb into the table (C-owned, empty rings). NULL: no room. */
static struct flow *flow_insert(struct dp *dp, const struct dp_tcb *tcb)
{
    struct flow *f = flow_slot(dp);
    if (f == NULL)
        return NULL;
    uint32_t slot = (uint32_t)(f - dp->flows);
    uint32_t gen = f->gen;
    uint8_t touched = f->touched; /* the slot may still sit in this round's list */
    uint8_t tx_waiting = f->tx_waiting; /* ... or in the transmit wait list */
    uint16_t in_arena = f->in_arena;    /* ... and its frames in the arena */
    uint16_t data_in_arena = f->data_in_arena;
    uint64_t xsk_mark = f->xsk_mark;    /* ... or on the tx ring */
    uint8_t chan_again = f->chan_again; /* ... or in the channels' lists: a flag cleared */
    uint8_t in_ringpoll = f->in_ringpoll; /* here would let the slot in twice, past the end */
    uint8_t in_doorwait = f->in_doorwait;
    memset(f, 0, sizeof *f);
    f->gen = gen;
    f->touched = touched;
    f->tx_waiting = tx_waiting;
    f->in_arena = in_arena;
    f->data_in_arena = data_in_arena;
    f->xsk_mark = xsk_mark;
    f->chan_again = chan_again;
    f->in_ringpoll = in_ringpoll;
    f->in_doorwait = in_doorwait;
    f->t = *tcb;
    if (f->t.rcv_max < f->t.rcv_cap)
        f->t.rcv_max = f->t.rcv_cap; /* no autotuning room: the buffer stays as it is */
    f->t.reason = DP_REASON_NONE;
    f->t.app_gone = 0; /* app_eof: the TCB's (adopt_close_ok) */
    f->t.segs_in = f->t.segs_out = f->t.bytes_in = f->t.bytes_out = 0;
    f->t.bytes_acked = f->t.rtt_sample_count = 0;
    ring_init(&f->rcv, tcb->rcv_cap + tcb->rcv_slack);
    ring_init(&f->snd, tcb->snd_cap);
    memcpy(f->tmpl.dst_mac, tcb->dst_mac, 6);
    memcpy(f->tmpl.src_mac, tcb->src_mac, 6);
    memcpy(f->tmpl.src_ip, tcb->local_ip, 16);
    memcpy(f->tmpl.dst_ip, tcb->remote_ip, 16);
    f->tmpl.ipv6 = tcb->ipv6;
    f->tmpl.src_port = tcb->local_port;
    f->tmpl.dst_port = tcb->remote_port;
    f->tmpl.ttl = dp->cfg.ttl;
    f->tmpl.df = 1;
    dp->n_free--;
    f->state = FLOW_C;
    uint32_t *b = bucket_of(dp, tcb);
    f->hnext = *b;
    *b = slot + 1;
    f->live_pos = dp->n_live;
    dp->live[dp->n_live++] = slot;
    dp->st.live = dp->n_live;
    return f;
}

/* The out-of-order ranges an adopted TCB brings (Reassembler.save_hot): at most
 * DP_OOO_RANGES, in sequence order above RCV.NXT, disjoint and not touching, stamped
 * 1..ooo_clock, their bytes packed after the in-order ones in rcv_len, and the last one
 * inside the ring. The in-order byte count, or -1 when any of that fails. */
static int64_t adopt_in_order(const struct dp_tcb *t, uint32_t rcv_len)
{
    if (t->ooo_count > DP_OOO_RANGES)
        return -1;
    uint32_t prev = t->rcv_nxt, held = 0;
    for (uint32_t i = 0; i < t->ooo_count; i++) {
        const struct dp_ooo *r = &t->ooo[i];
        if (sdiff(r->start, prev) <= 0 || sdiff(r->end, r->start) <= 0 ||
            r->stamp == 0 || r->stamp > t->ooo_clock)
            return -1;
        held += r->end - r->start;
        prev = r->end;
    }
    if (held > rcv_len)
        return -1;
    uint64_t extent = (uint64_t)(rcv_len - held) + (uint32_t)(prev - t->rcv_nxt);
    return extent > (uint64_t)t->rcv_cap + t->rcv_slack ? -1 : (int64_t)(rcv_len - held);
}

/* Whether the sender's state a TCB brings fits what C keeps and what sack_ack assumes:
 * send-time records ascending inside [SND.UNA, SND.NXT]; SACKed ranges sorted,
 * disjoint, not touching, inside [SND.UNA, SND.NXT], their byte count right; SACK state
 * only with SACK; DupThresh and the reordering multiplier at least 1; a HyStart++ phase
 * that exists. */
static int adopt_sender_ok(const struct dp_tcb *t)
{
    uint32_t flight = t->snd_nxt - t->snd_una;
    if (t->tx_count > DP_TX_RECORDS || t->sacked_count > DP_SACK_RANGES ||
        t->dupthresh == 0 || t->reo_wnd_mult == 0 || t->hs_phase > HS_PHASE_OFF ||
        (!t->sack_ok && (t->tx_count || t->sacked_count || t->dupacks)))
        return 0;
    uint32_t prev = t->snd_una;
    for (uint32_t i = 0; i < t->tx_count; i++) {
        uint32_t end = t->tx[i].end;
        if ((i && sdiff(end, prev) <= 0) || end - t->snd_una > flight)
            return 0;
        prev = end;
    }
    uint32_t bytes = 0;
    prev = t->snd_una;
    for (uint32_t i = 0; i < t->sacked_count; i++) {
        const struct dp_range *r = &t->sacked[i];
        if (sdiff(r->start, prev) < (i ? 1 : 0) || sdiff(r->end, r->start) <= 0 ||
            r->end - t->snd_una > flight)
            return 0;
        bytes += r->end - r->start;
        prev = r->end;
    }
    return bytes == t->sacked_bytes;
}

/* A TCB Python gives C is ESTABLISHED, or FIN-WAIT-1 after its application's EOF (the
 * FIN queued, maybe sent: then SND.NXT counts it). */
static int adopt_close_ok(const struct dp_tcb *t)
{
    if (t->tcp_state == DP_ESTABLISHED)
        return !t->fin_queued && !t->fin_sent && !t->peer_fin && !t->app_eof;
    return t->tcp_state == DP_FIN_WAIT_1 && t->fin_queued && t->app_eof && !t->peer_fin &&
           (!t->fin_sent || t->snd_nxt != t->snd_una);
}

int64_t dp_flow_adopt(struct dp *dp, const struct dp_tcb *tcb, const uint8_t *rcv,
                      uint32_t rcv_len, const uint8_t *snd, uint32_t snd_len)
{
    /* Ethernet, IP and TCP headers and the timestamp option: what emit() builds. */
    uint32_t headers = 14 + ip_header_len(tcb->ipv6) + 20 + (tcb->ts_ok ? 12 : 0);
    int64_t in_order = adopt_in_order(tcb, rcv_len);
    if (tcb->smss == 0 || tcb->smss + headers > dp->cfg.max_frame ||
        snd_len > tcb->snd_cap || in_order < 0 || !adopt_sender_ok(tcb) ||
        tcb->rcv_shift > 14 || tcb->snd_shift > 14 || !adopt_close_ok(tcb) ||
        (uint32_t)(tcb->snd_nxt - tcb->snd_una) - (tcb->fin_sent ? 1u : 0u) > snd_len ||
        tcb->ipv6 > 1 || (!tcb->ipv6 && !ipv4_tail_clear(tcb)))
        return -EINVAL;
    struct tuple key = tuple_of(tcb);
    if (flow_lookup(dp, &key))
        return -EEXIST;
    struct flow *f = flow_insert(dp, tcb);
    if (f != NULL && dp->n_ports) {
        /* Its frames sent before (in Python, or in C under another slot) may still wait
         * in the arena or on the ring: no GSO before they all have completed. */
        const uint64_t *placed = dp->ports[0].tx_placed;
        f->xsk_mark = (placed ? *placed : 0) + dp->arena_used;
    }
    if (f == NULL)
        return -ENOSPC;
    if (ring_put(&dp->pool, &f->rcv, rcv, (uint32_t)in_order) != (uint32_t)in_order ||
        ring_put(&dp->pool, &f->snd, snd, snd_len) != snd_len) {
        flow_forget(dp, f);
        return -ENOMEM;
    }
    /* The held ranges at their offsets past the in-order bytes. Room for the last
     * one's end first, once (inside the ring, as adopt_in_order checked): growing the
     * ring between ranges would copy only what hold covers, and hold is set after. */
    if (f->t.ooo_count) {
        uint32_t extent = f->t.ooo[f->t.ooo_count - 1].end - f->t.rcv_nxt;
        if (ring_room(&dp->pool, &f->rcv, extent) < 0) {
            flow_forget(dp, f);
            return -ENOMEM;
        }
    }
    const uint8_t *src = rcv + in_order;
    for (uint32_t i = 0; i < f->t.ooo_count; i++) {
        const struct dp_ooo *r = &f->t.ooo[i];
        ring_write_at(&f->rcv, r->start - f->t.rcv_nxt, src, r->end - r->start);
        src += r->end - r->start;
    }
    ooo_hold(f);
    if (f->t.app_fd >= 0) {
        /* After the application's EOF its descriptor stays readable: not watched for
         * reading (app_eof), as app_eof() leaves it. */
        uint32_t in = f->t.app_eof ? 0 : APP_IN;
        int rc = epoll_set(dp, f, in | ((f->rcv.len || f->t.revert_chan) && !f->t.chan ? EPOLLOUT : 0));
        if (rc < 0) { /* a descriptor epoll refuses: the flow stays Python's */
            flow_forget(dp, f);
            return rc;
        }
        f->app_readable = 1; /* bytes may have come before the flow was ours */
    }
    chan_door_mode(dp, f->t.chan, 1);
    timer_arm(dp, f, earliest_deadline(&f->t));
    dp->st.flows_adopted++;
    touch(dp, f); /* owed ACKs and queued bytes go in the next round */
    return handle_of(dp, f);
}

int64_t dp_flow_rcv_len(const struct dp *dp, int64_t handle)
{
    const struct flow *f = flow_of(dp, handle);
    return f ? (int64_t)f->rcv.len : -EBADF;
}

int64_t dp_flow_snd_len(const struct dp *dp, int64_t handle)
{
    const struct flow *f = flow_of(dp, handle);
    return f ? (int64_t)f->snd.len : -EBADF;
}

static uint32_t ooo_bytes(const struct dp_tcb *t)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->ooo_count; i++)
        n += t->ooo[i].end - t->ooo[i].start;
    return n;
}

int64_t dp_flow_ooo_len(const struct dp *dp, int64_t handle)
{
    const struct flow *f = flow_of(dp, handle);
    return f ? (int64_t)ooo_bytes(&f->t) : -EBADF;
}

int dp_flow_release(struct dp *dp, int64_t handle, struct dp_tcb *out, uint8_t *rcv,
                    uint32_t rcv_cap, uint8_t *snd, uint32_t snd_cap)
{
    struct flow *f = flow_of(dp, handle);
    if (f == NULL) {
        dp->st.bad_handle++;
        return -EBADF;
    }
    if (f->t.tcp_state == DP_SYN_SENT)
        return -EBUSY; /* an active open no TcpConnection knows: C's until answered */
    if (rcv_cap < f->rcv.len || rcv_cap - f->rcv.len < ooo_bytes(&f->t) ||
        snd_cap < f->snd.len)
        return -ENOBUFS;
    if (f->state == FLOW_C) {
        f->t.reason = DP_REASON_RELEASED;
        dp->st.handbacks[DP_REASON_RELEASED]++;
    }
    chan_door_mode(dp, f->t.chan, 0); /* Python's now: the pump arms on the socket */
    *out = f->t;
    if (f->rcv.len)
        ring_copy(&f->rcv, 0, rcv, f->rcv.len);
    /* The held ranges, packed after the in-order bytes (out->ooo says where each goes). */
    uint32_t at = f->rcv.len;
    for (uint32_t i = 0; i < f->t.ooo_count; i++) {
        const struct dp_ooo *r = &f->t.ooo[i];
        ring_copy(&f->rcv, f->rcv.len + (r->start - f->t.rcv_nxt), rcv + at, r->end - r->start);
        at += r->end - r->start;
    }
    if (f->snd.len)
        ring_copy(&f->snd, 0, snd, f->snd.len);
    snd_drop_borrowed(dp, f); /* Python's copy is its own: tx's space goes back */
    /* A pending hand-back of this flow is dropped from the queue: it is done. */
    int64_t h = handle_of(dp, f);
    uint32_t k = 0;
    for (uint32_t i = 0; i < dp->n_handbacks; i++)
        if (dp->handbacks[i] != h)
            dp->handbacks[k++] = dp->handbacks[i];
    dp->n_handbacks = k;
    flow_forget(dp, f);
    dp->st.flows_released++;
    return 0;
}

int dp_flow_peek(const struct dp *dp, int64_t handle, struct dp_tcb *out)
{
    const struct flow *f = flow_of(dp, handle);
    if (f == NULL)
        return -EBADF;
    *out = f->t;
    return 0;
}

int64_t dp_flow_find(const struct dp *dp, const uint8_t *local_ip, uint16_t local_port,
                     const uint8_t *remote_ip, uint16_t remote_port, uint32_t ip_len)
{
    if (ip_len != 4 && ip_len != 16)
        return -EINVAL;
    struct tuple k = tuple_raw(local_ip, local_port, remote_ip, remote_port, ip_len);
    struct flow *f = flow_lookup((struct dp *)dp, &k);
    return f != NULL && f->state != FLOW_FREE ? handle_of((struct dp *)dp, f) : -ENOENT;
}

uint32_t dp_flows(const struct dp *dp, int64_t *out, uint32_t max)
{
    uint32_t n = umin(max, dp->n_live);
    for (uint32_t i = 0; i < n; i++)
        out[i] = handle_of((struct dp *)dp, &dp->flows[dp->live[i]]);
    return n;
}

int dp_listen(struct dp *dp, const struct dp_listen_cfg *cfg)
{
    struct dp_syn_offer offer = offer_of_listener(cfg);
    if (cfg->n_names == 0 || cfg->n_names > DP_LISTEN_NAMES || cfg->syn_backlog == 0 ||
        !offer_ok(&offer) || ((cfg->takes4 | cfg->takes6) & ((1u << cfg->n_names) - 1)) == 0 ||
        !template_ok(dp, &cfg->tmpl, 0) || !template_ok(dp, &cfg->tmpl6, 1))
        return -EINVAL;
    for (uint32_t i = 0; i < cfg->n_names; i++)
        if (memchr(cfg->names[i], 0, DP_NAME_BYTES) == NULL || cfg->names[i][0] == 0)
            return -EINVAL;
    struct listener *l = listener_of(dp, cfg->port);
    if (l == NULL) {
        if (dp->n_listeners == DP_MAX_LISTENERS)
            return -ENOSPC;
        l = &dp->listeners[dp->n_listeners++];
        l->half_open = 0;
        l->rr = 0;
    }
    l->cfg = *cfg;
    return 0;
}

int dp_unlisten(struct dp *dp, uint16_t port)
{
    struct listener *l = listener_of(dp, port);
    if (l == NULL)
        return -ENOENT;
    *l = dp->listeners[--dp->n_listeners];
    return 0;
}

/* --- lifecycle ---------------------------------------------------------------------- */

struct dp *dp_new(const struct dp_config *cfg)
{
    if (cfg->max_flows == 0 || cfg->max_flows > (1u << 24) || cfg->batch == 0 ||
        cfg->batch > 256 || cfg->max_frame < 128 || cfg->max_frame > 65536 ||
        cfg->decline_frames < cfg->batch || cfg->rx_batches == 0 || cfg->rx_batches > 64)
        return NULL;
    struct dp *dp = calloc(1, sizeof *dp);
    if (dp == NULL)
        return NULL;
    dp->cfg = *cfg;
    dp->epfd = -1;
    dp->gso_fd = -1;
    dp->load_fd = cfg->spin_ns ? open("/proc/loadavg", O_RDONLY | O_CLOEXEC) : -1;
    dp->spin_window = fmin(cfg->spin_ns * 1e-9, SPIN_GROW_START); /* then as periods go */
    dp->n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (dp->n_cpus < 1)
        dp->n_cpus = 1; /* unknown: "more runnable than CPUs" still means a waiter */
    uint32_t flows = cfg->max_flows, buckets = 1;
    while (buckets < 2 * flows)
        buckets <<= 1;
    dp->bucket_mask = buckets - 1;
    dp->arena_slots = cfg->batch * ARENA_BATCHES;
    dp->arena_reserve = dp->arena_slots / 8 ? dp->arena_slots / 8 : 1;
    dp->flows = calloc(flows, sizeof *dp->flows);
    dp->free_slots = calloc(flows, sizeof *dp->free_slots);
    dp->buckets = calloc(buckets, sizeof *dp->buckets);
    dp->live = calloc(flows, sizeof *dp->live);
    dp->touched = calloc(flows, sizeof *dp->touched);
    dp->handbacks = calloc(flows, sizeof *dp->handbacks);
    dp->again = calloc(flows, sizeof *dp->again);
    dp->ringpoll = calloc(flows, sizeof *dp->ringpoll);
    dp->doorwait = calloc(flows, sizeof *dp->doorwait);
    dp->wheel = calloc(WHEEL_SLOTS, sizeof *dp->wheel);
    dp->descs = calloc(cfg->batch, sizeof *dp->descs);
    dp->rx_offs = calloc(cfg->batch, sizeof *dp->rx_offs);
    dp->rx_lens = calloc(cfg->batch, sizeof *dp->rx_lens);
    dp->parsed = calloc(cfg->batch, sizeof *dp->parsed);
    dp->parsed6 = calloc(cfg->batch, sizeof *dp->parsed6);
    dp->arena = malloc((size_t)dp->arena_slots * cfg->max_frame);
    dp->arena_offs = calloc(dp->arena_slots, sizeof *dp->arena_offs);
    dp->arena_caps = calloc(dp->arena_slots, sizeof *dp->arena_caps);
    dp->arena_lens = calloc(dp->arena_slots, sizeof *dp->arena_lens);
    dp->arena_flow = calloc(dp->arena_slots, sizeof *dp->arena_flow);
    dp->dec = malloc((size_t)cfg->decline_frames * cfg->max_frame);
    dp->dec_offs = calloc(cfg->decline_frames, sizeof *dp->dec_offs);
    dp->dec_lens = calloc(cfg->decline_frames, sizeof *dp->dec_lens);
    dp->inj = malloc((size_t)cfg->batch * cfg->max_frame);
    dp->inj_lens = calloc(cfg->batch, sizeof *dp->inj_lens);
    dp->listeners = calloc(DP_MAX_LISTENERS, sizeof *dp->listeners);
    dp->tw_fifo = calloc(flows, sizeof *dp->tw_fifo);
    dp->tx_wait = calloc(flows, sizeof *dp->tx_wait);
    dp->pid = (int)getpid();
    dp->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!dp->flows || !dp->free_slots || !dp->buckets || !dp->live || !dp->touched ||
        !dp->handbacks || !dp->wheel || !dp->descs || !dp->rx_offs || !dp->rx_lens || !dp->parsed || !dp->parsed6 ||
        !dp->arena || !dp->arena_offs || !dp->arena_caps || !dp->arena_lens ||
        !dp->arena_flow || !dp->dec || !dp->inj || !dp->inj_lens ||
        !dp->dec_offs || !dp->dec_lens || !dp->listeners || !dp->tw_fifo || !dp->tx_wait ||
        !dp->again || !dp->ringpoll || !dp->doorwait || (dp->chans = chans_new(flows)) == NULL ||
        dp->epfd < 0) {
        dp_free(dp);
        return NULL;
    }
    for (uint32_t i = 0; i < flows; i++) {
        dp->free_slots[i] = flows - 1 - i;
        dp->flows[i].gen = 1;
    }
    dp->n_free = flows;
    for (uint32_t i = 0; i < dp->arena_slots; i++) {
        dp->arena_offs[i] = (uint64_t)i * cfg->max_frame;
        dp->arena_caps[i] = cfg->max_frame;
    }
    for (uint32_t i = 0; i < cfg->decline_frames; i++)
        dp->dec_offs[i] = (uint64_t)i * cfg->max_frame;
    dp->ip_id = (uint16_t)(uintptr_t)dp;
    return dp;
}

void dp_free(struct dp *dp)
{
    if (dp == NULL)
        return;
    if (dp->flows)
        for (uint32_t i = 0; i < dp->cfg.max_flows; i++) {
            struct flow *f = &dp->flows[i];
            /* A born flow's application end is C's until Python takes the flow. */
            if (f->state != FLOW_FREE && f->t.born && f->t.app_fd >= 0)
                close(f->t.app_fd);
            free(f->rcv.buf);
            if (!f->snd.borrowed) /* else its channel's, unmapped with the table */
                free(f->snd.buf);
        }
    if (dp->chans != NULL && dp->chans->refs > 1) {
        /* The table lives on with the other planes: the doors this plane's epoll
         * watches go now, while it is open (claims bring them again, to a live plane). */
        struct jr_arenas *as = &dp->chans->arenas;
        chans_lock(dp->chans);
        for (uint32_t i = 0; i < as->max; i++)
            if (as->a[i].base != NULL && as->a[i].wake.door_epfd == dp->epfd)
                jr_arena_drop_door(&as->a[i]);
        chans_unlock(dp->chans);
    }
    chans_put(dp->chans); /* the last plane's: every door goes, each epoll still open */
    dp->chans = NULL;
    sessions_free(dp);
    if (dp->epfd >= 0)
        close(dp->epfd);
    if (dp->load_fd >= 0)
        close(dp->load_fd);
    free(dp->flows);
    free(dp->free_slots);
    free(dp->buckets);
    free(dp->live);
    free(dp->touched);
    free(dp->handbacks);
    free(dp->again);
    free(dp->ringpoll);
    free(dp->doorwait);
    free(dp->wheel);
    free(dp->descs);
    free(dp->rx_offs);
    free(dp->rx_lens);
    free(dp->parsed);
    free(dp->parsed6);
    free(dp->arena);
    free(dp->arena_offs);
    free(dp->arena_caps);
    free(dp->arena_lens);
    free(dp->arena_flow);
    free(dp->dec);
    free(dp->dec_offs);
    free(dp->dec_lens);
    free(dp->inj);
    free(dp->inj_lens);
    free(dp->listeners);
    free(dp->tx_wait);
    free(dp->tw_fifo);
    while (dp->pool.n)
        free(dp->pool.bufs[--dp->pool.n]);
    free(dp);
}

int dp_add_port(struct dp *dp, const struct dp_port *port)
{
    if (dp->n_ports == sizeof dp->ports / sizeof dp->ports[0])
        return -ENOSPC;
    if (!port->rx || !port->release || !port->tx_copy || !port->kick || !port->umem ||
        (port->room_fd >= 0 && !port->want_room))
        return -EINVAL;
    if (port->room_fd >= 0 && dp->n_ports > 0)
        return -EINVAL; /* the loop waits for room on its first port only */
    if (port->fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_PORT | dp->n_ports};
        if (epoll_ctl(dp->epfd, EPOLL_CTL_ADD, port->fd, &ev) < 0)
            return -errno;
    }
    if (port->room_fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_ROOM};
        if (epoll_ctl(dp->epfd, EPOLL_CTL_ADD, port->room_fd, &ev) < 0) {
            int err = -errno;
            if (port->fd >= 0)
                epoll_ctl(dp->epfd, EPOLL_CTL_DEL, port->fd, NULL);
            return err;
        }
    }
    dp->ports[dp->n_ports++] = *port;
    return 0;
}

/* The process's own application's bell and door (embedded mode; hub.c's dp_set_bell):
 * claims from this process may have the bell, and the door wakes the loop. */
static int dp_set_door(struct dp *dp, struct jr_bell *bell, struct jr_door *door)
{
    if (dp->door != NULL)
        epoll_ctl(dp->epfd, EPOLL_CTL_DEL, dp->door->efd, NULL);
    dp->door = NULL;
    JR_STORE(&dp->bell, NULL);
    if (door != NULL) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_DOOR};
        if (epoll_ctl(dp->epfd, EPOLL_CTL_ADD, door->efd, &ev) < 0)
            return -errno;
        dp->door = door;
    }
    JR_STORE(&dp->bell, bell);
    return 0;
}

void dp_door_python(struct dp *dp, int on)
{
    dp->door_python = on != 0;
}

int dp_watch_fd(struct dp *dp, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_WATCH};
    if (epoll_ctl(dp->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    return 0;
}

const struct dp_stats *dp_stats(struct dp *dp)
{
    /* The table's: with several workers, every plane says the same (workers.py). */
    dp->st.chan_bell_pushes =
        __atomic_load_n(&dp->chans->arenas.bell_counts.pushes, __ATOMIC_RELAXED);
    dp->st.chan_bell_wakes =
        __atomic_load_n(&dp->chans->arenas.bell_counts.wakes, __ATOMIC_RELAXED);
    dp->st.chan_tokens =
        __atomic_load_n(&dp->chans->arenas.bell_counts.tokens, __ATOMIC_RELAXED);
    return &dp->st;
}
const struct dp_counts *dp_ended_counts(const struct dp *dp) { return &dp->ended; }

void dp_set_capture(struct dp *dp, struct cap *c) { dp->cap = c; }

void dp_set_gso(struct dp *dp, int fd) { dp->gso_fd = fd; }

/* --- the in-memory port ------------------------------------------------------------- */

struct memq {
    uint8_t *slab;
    uint32_t *lens;
    uint32_t head;
    uint32_t count;
};

struct dp_memport {
    uint32_t slots;
    uint32_t tx_limit;         /* frames the out queue takes in DP_TX_NOWAIT mode */
    uint32_t max_frame;
    struct memq in;
    struct memq out;
    uint32_t held;
    /* frames into the out queue and out of it: a tx ring's placed and completed */
    uint64_t out_produced;
    uint64_t out_consumed;
};

static int memport_rx(void *ctx, struct dp_desc *out, uint32_t max, int timeout_ms)
{
    (void)timeout_ms;
    struct dp_memport *m = ctx;
    uint32_t n = umin(max, m->in.count);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t slot = (m->in.head + i) % m->slots;
        out[i].addr = (uint64_t)slot * m->max_frame;
        out[i].len = m->in.lens[slot];
        out[i].options = 0;
    }
    m->held = n;
    return (int)n;
}

static int memport_release(void *ctx, const struct dp_desc *d, uint32_t n)
{
    (void)d;
    struct dp_memport *m = ctx;
    n = umin(n, m->held);
    m->in.head = (m->in.head + n) % m->slots;
    m->in.count -= n;
    m->held = 0;
    return (int)n;
}

static int memq_push(struct dp_memport *m, struct memq *q, const uint8_t *src, uint32_t len)
{
    if (q->count == m->slots || len > m->max_frame)
        return -ENOBUFS;
    uint32_t slot = (q->head + q->count) % m->slots;
    memcpy(q->slab + (size_t)slot * m->max_frame, src, len);
    q->lens[slot] = len;
    q->count++;
    return 0;
}

static int memport_tx_copy(void *ctx, uint8_t *umem, uint64_t tx_offset, const uint8_t *src,
                           const uint64_t *offs, const uint32_t *lens, uint32_t n, int kick)
{
    (void)umem;
    (void)tx_offset;
    struct dp_memport *m = ctx;
    uint32_t i = 0;
    for (; i < n; i++) {
        /* A NIC full for C's frames; Python's would wait for its drain, so they fit. */
        if (kick == DP_TX_NOWAIT && m->out.count >= m->tx_limit)
            break;
        if (memq_push(m, &m->out, src + offs[i], lens[i]) < 0)
            break;
    }
    m->out_produced += i;
    return (int)i;
}

static int memport_kick(void *ctx)
{
    (void)ctx;
    return 0;
}

struct dp_memport *dp_memport_new(uint32_t slots, uint32_t max_frame)
{
    if (slots == 0 || max_frame == 0)
        return NULL;
    struct dp_memport *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->slots = slots;
    m->tx_limit = slots;
    m->max_frame = max_frame;
    m->in.slab = malloc((size_t)slots * max_frame);
    m->out.slab = malloc((size_t)slots * max_frame);
    m->in.lens = calloc(slots, sizeof(uint32_t));
    m->out.lens = calloc(slots, sizeof(uint32_t));
    if (!m->in.slab || !m->out.slab || !m->in.lens || !m->out.lens) {
        dp_memport_free(m);
        return NULL;
    }
    return m;
}

int dp_memport_limit_tx(struct dp_memport *m, uint32_t frames)
{
    if (frames == 0 || frames > m->slots)
        return -EINVAL;
    m->tx_limit = frames;
    return 0;
}

void dp_memport_free(struct dp_memport *m)
{
    if (m == NULL)
        return;
    free(m->in.slab);
    free(m->out.slab);
    free(m->in.lens);
    free(m->out.lens);
    free(m);
}

int dp_memport_port(struct dp_memport *m, struct dp_port *out)
{
    memset(out, 0, sizeof *out);
    out->ctx = m;
    out->fd = -1;
    out->room_fd = -1;
    out->umem = m->in.slab;
    out->rx = (void *)memport_rx;
    out->release = (void *)memport_release;
    out->tx_copy = (void *)memport_tx_copy;
    out->kick = (void *)memport_kick;
    out->tx_placed = &m->out_produced;
    out->tx_completed = &m->out_consumed;
    return 0;
}

int dp_memport_push(struct dp_memport *m, const uint8_t *frame, uint32_t len)
{
    return memq_push(m, &m->in, frame, len);
}

int dp_memport_pop(struct dp_memport *m, uint8_t *out, uint32_t cap)
{
    struct memq *q = &m->out;
    if (q->count == 0)
        return 0;
    uint32_t len = q->lens[q->head];
    if (len > cap)
        return -ENOBUFS;
    memcpy(out, q->slab + (size_t)q->head * m->max_frame, len);
    q->head = (q->head + 1) % m->slots;
    q->count--;
    m->out_consumed++;
    return (int)len;
}

/* --- shared-memory channels: the entry points both sides use (dataplane.h) --------- */

int64_t dp_chan_recv(int sock, uint8_t *buf, uint32_t n, int *fd)
{
    struct iovec iov = {buf, n};
    return jr_chan_svc_recv(sock, &iov, 1, fd);
}

/* The bell a claim on sock may have: the process's own application's (embedded mode),
 * when the listener at sock's other end is this process's (SO_PEERCRED: the listener's
 * creator). Another process's claim for a bell is refused (chan_claim.h). */
static struct jr_bell *bell_for(struct dp *dp, int sock)
{
    struct jr_bell *bell = JR_LOAD(&dp->bell);
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (bell == NULL || getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        cred.pid != getpid())
        return NULL;
    return bell;
}

static int64_t chan_first(struct dp *dp, const uint8_t *buf, uint32_t len, int fd,
                          int claimable, struct jr_bell *bell)
{
    int64_t rc = chans_first_bytes(dp->chans, buf, len, fd, claimable, bell,
                                   bell != NULL ? dp->door : NULL);
    if (rc != -ENOMSG) {
        dp->st.chan_claims++;
        if (rc > 0) {
            dp->st.chan_ring++;
            struct jr_chan_svc *s = chan_svc(dp->chans, (uint32_t)rc);
            dp->st.chan_born_bell += s != NULL && s->born_bell;
        } else
            dp->st.chan_refused++;
    }
    return rc;
}

/* A claim with a door was accepted: its arena keeps the first door it is given, which
 * the loop then watches (until the arena is unmapped: jr_arena_drop_door). */
static void chan_take_door(struct dp *dp, uint32_t chan, int door)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    if (s == NULL) {
        if (door >= 0)
            close(door);
        return;
    }
    chans_lock(dp->chans);
    /* Watched by this plane's loop (epoll refusing it: no door, socket arms as before). */
    int took = jr_arena_take_door(&dp->chans->arenas, s->arena, door, dp->epfd,
                                  TAG_ADOOR | (uint32_t)s->arena);
    chans_unlock(dp->chans);
    dp->st.chan_doors += took;
}

int64_t dp_chan_take_first(struct dp *dp, int sock, uint8_t *buf, uint32_t cap,
                           int claimable, int64_t *got)
{
    int fd, door;
    struct iovec iov = {buf, cap};
    *got = jr_chan_svc_recv2(sock, &iov, 1, &fd, &door);
    int64_t decision = 0;
    if (*got > 0) {
        struct jr_bell *bell = fd >= 0 ? bell_for(dp, sock) : NULL;
        decision = chan_first(dp, buf, (uint32_t)*got, fd, claimable, bell);
        if (bell != NULL && decision != -ENOMSG)
            chans_verdict_bell(bell, buf, (uint32_t)*got);
    }
    if (decision > 0 && door >= 0 && jr_claim_has_door(buf, (size_t)*got))
        chan_take_door(dp, (uint32_t)decision, door);
    else if (door >= 0)
        close(door);
    if (fd >= 0)
        close(fd);
    return decision;
}

int64_t dp_chan_first_bytes(struct dp *dp, const uint8_t *buf, uint32_t len, int fd,
                            int claimable)
{
    return chan_first(dp, buf, len, fd, claimable, NULL);
}

int64_t dp_chan_deliver(struct dp *dp, uint32_t chan, int fd, const uint8_t *buf, uint32_t n)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    return s ? jr_chan_svc_deliver(s, fd, buf, n) : -EBADF;
}

int64_t dp_chan_collect(struct dp *dp, uint32_t chan, int fd, uint8_t *buf, uint32_t n)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    return s ? jr_chan_svc_collect(s, fd, buf, n) : -EBADF;
}

int dp_chan_idle(struct dp *dp, uint32_t chan, int fd, int waits)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    if (s == NULL)
        return -EBADF;
    if (s->arena_door != NULL)
        chan_door_mode(dp, chan, 0); /* the pump's arms are the socket's again */
    return jr_chan_svc_idle(s, fd, waits);
}

int dp_chan_wait_door(struct dp *dp, uint32_t chan, int fd, int waits)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    if (s == NULL)
        return -EBADF;
    if (!(waits & JR_CHAN_WAIT_ROOM)) {
        /* Nothing the door would bring (TCP's progress wakes the pump): nothing is
         * armed, but a re-token request is still answered. */
        if (s->arena_door != NULL)
            chan_door_mode(dp, chan, 0);
        return jr_chan_svc_arm(s, fd, waits);
    }
    struct dp_chans *c = dp->chans;
    chans_lock(c);
    /* Whichever plane watches the door (a worker's): its ring wakes Python through
     * that plane's loop (py_door_look, DP_WAKE_DOOR). Listed before the arm: a ring
     * after the arm finds the channel there. */
    const struct jr_arena *ar = s->arena >= 0 && (uint32_t)s->arena < c->arenas.max
                                    ? &c->arenas.a[s->arena] : NULL;
    uint32_t *word = ar != NULL && ar->wake.door_epfd >= 0
                         ? jr_arena_door_word(&c->arenas, s->arena, ar->wake.door_epfd)
                         : NULL;
    int listed = py_door_index(c, chan) < c->n_py_door;
    if (word != NULL && !listed && c->n_py_door < CHAN_PY_DOOR) {
        c->py_door[c->n_py_door++] = chan;
        listed = 1;
    }
    s->arena_door = word != NULL && listed ? word : NULL;
    chans_unlock(c);
    if (s->arena_door == NULL)
        return -ENODEV; /* no door, or too many pumps on doors: the socket's way */
    return jr_chan_svc_arm(s, fd, waits);
}

int dp_chan_tx_eof(struct dp *dp, uint32_t chan)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    return s ? jr_chan_svc_tx_eof(s) : 1;
}

int64_t dp_chan_rx_unread(struct dp *dp, uint32_t chan)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    return s ? jr_chan_svc_rx_unread(s) : 0;
}

int64_t dp_chan_tx_queued(struct dp *dp, uint32_t chan)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    int64_t n = s ? jr_chan_svc_tx_avail(s) : 0;
    return n > 0 ? n : 0;
}

void dp_chan_rx_eof(struct dp *dp, uint32_t chan)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    if (s != NULL)
        jr_chan_svc_rx_eof(s);
}

uint32_t dp_chan_trim(struct dp *dp)
{
    chans_lock(dp->chans);
    /* Idle arenas whose door, if any, this plane watches: each plane trims its own.
     * (A claim's eviction of an idle arena may close another plane's door; that, like
     * every drain of a door, is under the mutex: chan_door_rang.) */
    uint32_t gone = jr_arenas_trim(&dp->chans->arenas, dp->epfd);
    chans_unlock(dp->chans);
    dp->st.chan_arenas_trimmed += gone;
    return gone;
}

int dp_share_channels(struct dp *const *planes, uint32_t n)
{
    uint64_t total = 0;
    if (n < 2)
        return 0; /* one plane: its own table is the service's */
    for (uint32_t i = 0; i < n; i++) {
        if (!chans_unused(planes[i]->chans))
            return -EBUSY;
        total += planes[i]->chans->max;
    }
    if (total > UINT32_MAX / 2)
        return -EINVAL;
    struct dp_chans *c = chans_new((uint32_t)total);
    if (c == NULL)
        return -ENOMEM;
    c->refs = n;
    for (uint32_t i = 0; i < n; i++) {
        chans_put(planes[i]->chans);
        planes[i]->chans = c;
    }
    return 0;
}

int dp_chan_revert(struct dp *dp, uint32_t chan, int fd)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    if (s == NULL || !jr_chan_svc_revert_asked(s) || jr_chan_svc_tx_avail(s) != 0)
        return 0;
    int rc = jr_chan_svc_revert(s, fd);
    if (rc < 0)
        return rc;
    jr_chan_svc_verdict_wake(s->shm); /* the application waits for the switch */
    dp->st.chan_reverts++;
    dp->st.chan_revert_bytes += s->rx_tail - s->flush_head; /* flush_head: checked */
    return 1;
}

int64_t dp_chan_flush(struct dp *dp, uint32_t chan, int fd)
{
    struct jr_chan_svc *s = chan_svc(dp->chans, chan);
    return s != NULL ? jr_chan_svc_flush(s, fd) : 0;
}

void dp_chan_release(struct dp *dp, uint32_t chan)
{
    if (chan_svc(dp->chans, chan) == NULL)
        return;
    chans_release(dp->chans, chan);
    dp->st.chan_released++;
}

