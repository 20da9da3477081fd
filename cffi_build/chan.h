/*
 * chan.h - a connection's shared-memory channel between the network service and one
 * application (issue 17; the protocol and its ordering argument: docs/channels.md).
 *
 * One mapping per connection holds two single-producer single-consumer byte rings:
 *   rx  service -> application (the connection's received bytes)
 *   tx  application -> service (the bytes the application sends)
 * The application keeps its AF_UNIX stream socket to the service as its descriptor. In
 * ring mode that socket carries no payload, only readiness:
 *   service -> application  a 1-byte token: "rx has bytes you have not been told of";
 *                           shutdown(SHUT_WR) after rx_eof: EOF, EPOLLRDHUP.
 *   application -> service  any byte (a doorbell, a re-token request, filler): "look at
 *                           the flags"; filler keeps the application's socket unwritable
 *                           while tx is full.
 * An application process's arena may have a door (chan_claim.h, JR_CLAIM_DOOR): one
 * socket for all its channels, which the data plane watches. A channel the data plane
 * runs is armed in door mode (JR_ARMED_DOOR): the application then rings the door, and
 * only the first ring after the service armed the door (slot 0's arena_door word) makes
 * a system call, instead of a doorbell on each connection's socket.
 *
 * Contract
 *  - Sizes are fixed at creation; each side keeps its own copy of them and of the
 *    indices it writes. The service trusts nothing the application can write: every
 *    index it reads is checked against its own copy (JR_CHAN_BROKEN), and tx bytes are
 *    copied out of shared memory before it uses them.
 *  - Indices count bytes ever produced/consumed, mod 2^32; a ring's capacity is a power
 *    of two no larger than 2^31.
 *  - Each "store a flag, then look at the other side's index" pair is ordered by a
 *    sequentially consistent fence on both sides (the store-buffering pattern): of two
 *    such pairs racing, at least one side sees the other's store. That is what makes
 *    a lost wake-up impossible; tests/unit/channel/chan_model.py checks the steps.
 *  - Ring data is published by a release store of the producer's index and read after
 *    an acquire load of it; space is returned the same way with the consumer's index.
 *  - One application process per channel. (A fork needs the per-direction lock of
 *    docs/channels.md, "Next"; it is not built yet.)
 *
 * The functions are sans-I/O where they can be: they return what the caller must do on
 * the socket (JR_CHAN_SEND_TOKEN, JR_CHAN_DRAIN ...). The application's read and write
 * need to wait and drain in the middle of the protocol, so they take the socket steps
 * as callbacks (struct jr_chan_io).
 */
#ifndef JOYRIDE_CHAN_H
#define JOYRIDE_CHAN_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The header's first word: the service's verdict on a claim (chan_claim.h), and the
 * magic of a live channel. Stored last (release), read first (acquire). */
#define JR_CHAN_MAGIC 0x4843524au    /* "JRCH": a live channel, the claim accepted */
#define JR_CHAN_REFUSED 0x4652524au  /* "JRRF": the claim refused: stream mode */
#define JR_CHAN_RELEASED 0x4c52524au /* "JRRL": the service let go: the slot is free */
#define JR_CHAN_REVERTED 0x5652524au /* "JRRV": a stream again (JR_CHAN_REVERT_BYTE) */
/* "JRRD": released after a revert (the slot is free, and nothing in it is unread: its
 * bytes went to the new socket), unlike JR_CHAN_RELEASED's unread bytes. */
#define JR_CHAN_REVERT_DONE 0x4452524au
#define JR_CHAN_VERSION 6u /* 6: birth_arm; 5: rx_putting; 4: the arena's bell */
#define JR_CHAN_LINE 64

/* How the service armed svc_tx_armed / svc_rx_armed: what the application rings when it
 * takes the flag. A socket arm (the Python pump's, or an arena without a door) wants a
 * byte on the connection's socket; a door arm (the data plane's, with a door) the
 * arena's door, which the data plane always watches. */
#define JR_ARMED_SOCKET 1u
#define JR_ARMED_DOOR 2u

/* How the application armed rx_armed (bits; the service takes them all at once). A
 * token arm wants a token on the connection's socket, which the kernel's poll, select
 * and epoll see. A bell arm wants the slot pushed on the arena's bell (struct
 * jr_arena_bell): the shim's epoll_wait, which manages the process's epoll set, turns
 * the queue into events, and a byte on the arena's door wakes it only while it sleeps. */
#define JR_RX_ARM_TOKEN 1u
#define JR_RX_ARM_BELL 2u
/* A token the shim arms when a descriptor leaves its process's bell set (an epoll_ctl
 * that drops its read interest), for waits it has not seen yet: every wait it sees (a
 * blocking read, poll, select, an epoll registration for bytes that the bell does not
 * serve) arms JR_RX_ARM_TOKEN itself. The service sends a token for it as for any bit
 * but the bell's. The shim withdraws it when the descriptor joins the bell set again
 * before a put took it: an event loop that drops its read interest while it writes each
 * request (redis-benchmark's, hiredis's) would otherwise get a token, and drain it, for
 * every answer. */
#define JR_RX_ARM_TOKEN_SOFT 4u

/* Leaving ring mode for good (docs/channels.md, "Leaving ring mode"): the application
 * sends this byte on the connection's socket with one descriptor, the service's end of
 * a new socket pair, and then writes nothing into tx. The service takes what tx holds,
 * puts the new socket in the old one's place (jr_chan_svc_revert), sends it rx's bytes
 * the application never read (jr_chan_svc_flush), and serves it as a plain stream. Any
 * descriptor on a ring-mode connection is such a request; the byte only reads well in
 * a trace. */
#define JR_CHAN_REVERT_BYTE 'R'

/* Slots one arena's bell queue holds; a push that finds it full counts as lost, and the
 * application then looks at every channel it watches. */
#define JR_ARENA_BELL_CAP 512u

/* What the caller must do after a call (bits). */
enum jr_chan_action {
    JR_CHAN_SEND_TOKEN = 1, /* service: send one token byte to the application */
    JR_CHAN_DRAIN = 2,      /* service: read the application's queued bytes (filler) */
    JR_CHAN_BROKEN = 4,     /* service: an index the application wrote is impossible */
    JR_CHAN_RING_BELL = 8,  /* service: push the slot on the arena's bell */
};

/* One direction's indices, each on its own cache line (its writer's). */
struct jr_chan_ring {
    uint32_t tail __attribute__((aligned(JR_CHAN_LINE))); /* written by the producer */
    uint32_t head __attribute__((aligned(JR_CHAN_LINE))); /* written by the consumer */
};

/* The shared mapping's header; the rx data follows at data_off, tx data after it. */
struct jr_chan {
    uint32_t magic, version;
    uint32_t rx_cap, tx_cap, data_off, size;
    struct jr_chan_ring rx, tx;
    /* Written by the application, taken (xchg to 0) by the service. */
    uint32_t rx_armed __attribute__((aligned(JR_CHAN_LINE))); /* rx was empty: token */
    uint32_t rx_retoken; /* a read cancelled its arm and left bytes: send a token */
    uint32_t tx_armed;   /* tx was full and the socket is filled: drain after room */
    uint32_t tx_eof;     /* shutdown(SHUT_WR): no byte after tx.tail */
    uint32_t tokens_taken; /* tokens the application drained (mod 2^32) */
    /* Written by the service, taken by the application. */
    uint32_t svc_rx_armed __attribute__((aligned(JR_CHAN_LINE))); /* waits for rx room */
    uint32_t svc_tx_armed; /* waits for tx bytes: ring the doorbell */
    uint32_t rx_eof;       /* no byte after rx.tail */
    uint32_t tokens_sent;  /* tokens sent to the socket (counted before the send) */
    uint32_t rx_putting;   /* between a put's tail (or a re-token's take) and its token */
    uint32_t rx_put_end;   /* ... and the rx.tail that put publishes (or the re-token saw) */
    uint32_t claim_id;     /* the claim this verdict answers (chan_claim.h) */
    /* Written by the application, taken by the service after a verdict: a thread
     * sleeps on the magic word (futex) until the verdict. Last: jr_chan_create keeps
     * it, or a waiter's flag stored before the layout would be wiped unseen. */
    uint32_t claim_waiting __attribute__((aligned(JR_CHAN_LINE)));
    /* The arm the channel is born with (JR_BIRTH_*): until the service lays the channel
     * out, the application may ask for a bell arm instead of a token's (its descriptor
     * is in the process's bell set, whose epoll_wait looks at the ring), or pin a
     * token's (a wait through the kernel). The service takes it in jr_chan_create,
     * which records what the channel was born with. Kept by jr_chan_create, as
     * claim_waiting. */
    uint32_t birth_arm;
    /* Slot 0's only: the arena's door. Set by the service (before it arms any channel of
     * the arena in door mode), taken by the application (xchg to 0): the taker writes
     * the door socket. Like claim_waiting, jr_chan_create keeps it. */
    uint32_t arena_door __attribute__((aligned(JR_CHAN_LINE)));
    /* Slot 0's only: the arena's bell, the other way (struct jr_arena_bell). */
    struct jr_arena_bell {
        /* Written by the service. The service writes from its own copies of tail and
         * lost (struct jr_arena_wake); these are only published. */
        uint32_t tail __attribute__((aligned(JR_CHAN_LINE))); /* slots pushed */
        uint32_t lost; /* pushes that found the queue full */
        /* 1 while the service holds the arena's door (chan_claim.h): the application's
         * claims need not send it again. */
        uint32_t door_held;
        uint32_t head __attribute__((aligned(JR_CHAN_LINE))); /* the application: taken */
        /* Set by the application before its epoll_wait sleeps, taken (xchg to 0) by the
         * service, which then writes a byte on the door. */
        uint32_t armed __attribute__((aligned(JR_CHAN_LINE)));
        uint32_t ids[JR_ARENA_BELL_CAP] __attribute__((aligned(JR_CHAN_LINE)));
    } arena_bell;
};

/* The bell of an application in the service's own process (embedded mode): one queue
 * of "this slot's rx owes a token" for all of the process's channels and one eventfd,
 * instead of a token on each connection's socket. An event loop then takes the queue
 * once per turn and sleeps on one descriptor; while it is busy (not armed) the service
 * makes no system call to tell it anything. The memory is the process's own (never
 * shared with another process): the bell is for a channel whose claim came from the
 * service's process (jr_chan_svc_claim's bell argument).
 *   - Only the service pushes (one thread: the data plane's); only the application
 *     takes. Slots are published by a release store of tail, taken after an acquire
 *     load of it; head is returned the same way.
 *   - A push that finds the queue full counts in `lost` instead: the application,
 *     seeing `lost` move, looks at every channel it has (nothing is dropped unseen).
 *   - Wake-ups are the channels' store-buffering pair again: the service stores tail,
 *     fences, takes `armed` (xchg); the application stores `armed`, fences, looks at
 *     tail and `lost`. Of the two, at least one sees the other's store, so either the
 *     eventfd is written or the application finds the slot without sleeping. */
struct jr_bell {
    uint32_t tail __attribute__((aligned(JR_CHAN_LINE))); /* the service: slots pushed */
    uint32_t lost;  /* the service: pushes that found the queue full */
    uint32_t head __attribute__((aligned(JR_CHAN_LINE))); /* the application: taken */
    uint32_t armed __attribute__((aligned(JR_CHAN_LINE))); /* set by the application,
                                                              taken by the service */
    uint32_t cap;   /* a power of two */
    int efd;        /* an eventfd, non-blocking: written when a push takes the arm */
    uint64_t arena_dev, arena_ino; /* the application's arena: only its claims ring */
    uint32_t ids[]; /* slot numbers */
};

/* The other way, the same process: the service's doorbell. Where a channel's
 * application would send a byte on its socket to make a sleeping service look (chan.h's
 * `bell` step: svc_tx_armed, svc_rx_armed, a re-token request, tx_eof), an application
 * in the service's own process rings this instead: one eventfd for all its channels,
 * written only by the first ring after the service armed it, so the writes of a busy
 * loop cost no system call. The service, woken by it, looks at every channel of the
 * process it armed (it does not learn which rang).
 *   The service stores armed = 1 and fences before it arms any channel (the fence
 *   orders the store before the channels' flags); an application that takes a channel's
 *   flag (xchg, seq_cst) then sees armed = 1 unless another ring took it, whose write
 *   wakes the service all the same. */
struct jr_door {
    uint32_t armed __attribute__((aligned(JR_CHAN_LINE))); /* set by the service, taken
                                                             by the application */
    int efd; /* an eventfd, non-blocking */
};

/* The service's counts of its arenas' bells (struct jr_arenas holds them). Added to
 * atomically (relaxed): planes pushing on different arenas' bells count here at once. */
struct jr_bell_counts {
    uint64_t pushes; /* slots pushed on an arena's bell (or counted lost) */
    uint64_t wakes;  /* ... that found the application asleep: a byte on its door */
    uint64_t tokens; /* token bytes sent on connections' sockets (a token arm's wake-up) */
};

/* The service's side of one arena's wake-ups (service mode; chan_claim.h's struct
 * jr_arena holds it): the door the application rings (and the service writes when it
 * takes the bell's arm), and its own copies of the bell's indices.
 *   The bell's queue has one producer at a time: the data-plane workers (threads) that
 * share the service's arenas each push for the channels of the flows they run, so a
 * push holds `lock` (service memory: the application never sees it), and so does a
 * change of the door, which a push writes. A mutex, not a spin: with more runnable
 * threads than CPUs a holder is preempted (its door write is a system call), and a
 * worker spinning on it then burnt its time slice (two workers on 2 vCPUs: redis GET
 * 0.59x the kernel with a spin, 0.90x with the mutex, service CPU 11.7 against 6.75 us
 * a request). Uncontended it costs what the spin did. */
struct jr_arena_wake {
    struct jr_arena_bell *bell; /* slot 0's, in the application's memory */
    uint32_t tail, lost;        /* the service's own: the shared ones are only published */
    int door_fd;                /* the door's service end (JR_CLAIM_DOOR), -1: none */
    int door_epfd;              /* the epoll that watches it: its plane's (-1: none) */
    pthread_mutex_t lock;       /* jr_wake_lock (all zeros: unlocked, as glibc's
                                   PTHREAD_MUTEX_INITIALIZER) */
    struct jr_bell_counts *counts; /* the service's totals (NULL: not counted) */
};

/* The service's private view: its own sizes and the indices it writes. */
struct jr_chan_svc {
    struct jr_chan *shm;
    uint8_t *rx_data, *tx_data;
    uint32_t rx_cap, tx_cap;
    uint32_t rx_tail; /* the service's copy: the shared one is only published */
    /* tx: the bytes before tx_head are returned to the application (published as
     * tx.head); those from tx_head to tx_seen the service has taken but still sends
     * from, in place (jr_chan_svc_tx_peek, until jr_chan_svc_tx_release). */
    uint32_t tx_head;
    uint32_t tx_seen;
    int32_t arena;    /* chan_claim.h: the arena it lives in (-1: none) and its slot */
    uint32_t slot;
    uint32_t rx_shut; /* rx's EOF was given (jr_chan_svc_rx_eof): no token can follow */
    struct jr_bell *bell; /* tokens go to the process's bell (embedded mode), or NULL */
    struct jr_door *door; /* ... and that application rings this door, not the socket */
    /* Service mode: the arena's door word (slot 0's arena_door) while the data plane
     * runs the channel and the arena has a door: arms are JR_ARMED_DOOR. Else NULL. */
    uint32_t *arena_door;
    /* Service mode: the arena's wake-ups, for a bell arm (JR_RX_ARM_BELL); NULL: none
     * (a bell arm is then answered with a token). */
    struct jr_arena_wake *wake;
    /* Leaving ring mode: the application's new socket, sent with its revert request
     * (jr_chan_svc_drain keeps it; -1: none), and, once jr_chan_svc_revert switched to
     * it, where rx's bytes the application never read start (jr_chan_svc_flush). */
    int revert_fd;
    uint32_t flush_head;
    uint8_t reverted; /* jr_chan_svc_revert switched it: released as JR_CHAN_REVERT_DONE */
    uint8_t born_bell; /* jr_chan_create armed it for the bell (birth_arm) */
};

/* The application's view. */
struct jr_chan_app {
    struct jr_chan *shm;
    const uint8_t *rx_data;
    uint8_t *tx_data;
    uint32_t rx_cap, tx_cap;
    uint64_t spurious; /* readiness that found nothing (counted, allowed) */
};

/* The socket steps of the application's side. Each returns 0 or -errno. */
struct jr_chan_io {
    int (*drain)(void *ctx);            /* recv(MSG_DONTWAIT) the queued tokens: how many */
    int (*bell)(void *ctx);             /* send one byte to the service; EAGAIN is fine */
    int (*fill)(void *ctx);             /* one burst of filler: jr_chan_fill_burst */
    int (*wait)(void *ctx, short what); /* poll for POLLIN or POLLOUT (blocking calls) */
    void *ctx;
    /* Whether the descriptor blocks (1) or not (0): asked only for JR_BLOCK_ASK, and
     * only once a call would wait (NULL: it blocks). */
    int (*blocking)(void *ctx);
    /* Ring the arena's door for a flag armed JR_ARMED_DOOR: take arena_door, and write
     * the door socket only if it was set (NULL: no door; the bell instead). < 0: the
     * word was taken but the door could not be written (closed under the caller, or
     * dropped by the service). */
    int (*door)(void *ctx);
    /* A read leaves bytes in rx that no token or bell push announces (it cancelled its
     * arm): 0 when the caller's own readiness covers them (the shim's epoll marks the
     * descriptor ready), < 0 or NULL: ask the service for a token (the re-token). */
    int (*unseen)(void *ctx);
    /* What a read that empties rx arms (JR_RX_ARM_*; NULL or 0: JR_RX_ARM_TOKEN): the
     * arena's bell while the shim's epoll watches the descriptor. The word is the
     * caller's and may change under a read (the bell turned off): the read looks at it
     * again after its arm and fence, and whoever changes it stores it, fences, then
     * arms a token and looks at rx (a store-buffering pair: one of the two arms it). */
    const uint32_t *arm;
};

/* The arm a read that empties rx makes now (struct jr_chan_io's arm). */
static inline uint32_t jr_chan_app_arm_kind(const struct jr_chan_io *io)
{
    uint32_t kind = io->arm != NULL ? __atomic_load_n(io->arm, __ATOMIC_ACQUIRE) : 0;
    return kind != 0 ? kind : JR_RX_ARM_TOKEN;
}

/* The filler that makes a full tx's socket unwritable, a burst at a time: at most
 * JR_FILL_BURST messages of 64 bytes through send_to (sendto, or the shim's real one).
 * 0 once the socket is unwritable (EAGAIN), 1 when it took the whole burst, -errno.
 * Bursts, not "until EAGAIN": the service drains whatever it finds on the socket (a
 * doorbell reads as filler does), and one that drains as fast as the filler comes kept
 * a writer filling for ever while tx had room again (an application's SO_SNDBUF of
 * 2 MiB, a stalled reader: test_ring_send_in_place.py). jr_chan_app_fill looks at tx
 * between bursts. */
#define JR_FILL_BURST 16
typedef ssize_t (*jr_sendto_fn)(int, const void *, size_t, int, const struct sockaddr *,
                                socklen_t);
static inline int jr_chan_fill_burst(jr_sendto_fn send_to, int fd)
{
    static const char filler[64];
    for (int i = 0; i < JR_FILL_BURST; i++)
        if (send_to(fd, filler, sizeof filler, MSG_DONTWAIT | MSG_NOSIGNAL, NULL, 0) <= 0)
            return errno == EAGAIN ? 0 : -errno;
    return 1;
}

/* The application took a flag the service armed (svc_tx_armed, svc_rx_armed): wake it
 * the way it armed. A door that cannot be written falls back to the connection's
 * socket, which the service watches for every flow it runs. */
static inline void jr_chan_app_ring(const struct jr_chan_io *io, uint32_t armed)
{
    if (armed == JR_ARMED_DOOR && io->door != NULL && io->door(io->ctx) >= 0)
        return;
    if (armed != 0)
        io->bell(io->ctx);
}

/* jr_chan_read/jr_chan_write's block: find out (io->blocking) only if the call would
 * wait. A call that finds bytes or room, most of them, then makes no system call for
 * it: the shim's O_NONBLOCK look is an fcntl, 1.5 per redis GET and 4 per nginx
 * request before (joyride.bench.syscalls, 2026-12-06). */
#define JR_BLOCK_ASK (-1)

static inline int jr_chan_blocks(const struct jr_chan_io *io, int *block)
{
    if (*block == JR_BLOCK_ASK)
        *block = io->blocking ? io->blocking(io->ctx) : 1;
    return *block;
}

#define JR_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define JR_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define JR_XCHG(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)
/* The fence of every "store a flag, then look at the other side" pair. */
#define JR_FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#if defined(__x86_64__) || defined(__i386__)
#define JR_CPU_RELAX() __builtin_ia32_pause()
#else
#define JR_CPU_RELAX() __atomic_signal_fence(__ATOMIC_SEQ_CST)
#endif

static inline int jr_chan_cap_ok(uint32_t cap)
{
    return cap >= 1 && cap <= (1u << 31) && (cap & (cap - 1)) == 0;
}

static inline size_t jr_chan_data_off(void)
{
    return (sizeof(struct jr_chan) + JR_CHAN_LINE - 1) & ~(size_t)(JR_CHAN_LINE - 1);
}

/* Bytes a mapping needs for these capacities (0 if they are not powers of two). */
static inline size_t jr_chan_size(uint32_t rx_cap, uint32_t tx_cap)
{
    if (!jr_chan_cap_ok(rx_cap) || !jr_chan_cap_ok(tx_cap))
        return 0;
    return jr_chan_data_off() + (size_t)rx_cap + tx_cap;
}

/* Copy n bytes into a ring at index at (wrapping), and out of one. */
static inline void jr_ring_copy_in(uint8_t *data, uint32_t cap, uint32_t at, const void *src,
                                   uint32_t n)
{
    uint32_t off = at & (cap - 1), first = cap - off < n ? cap - off : n;
    memcpy(data + off, src, first);
    memcpy(data, (const uint8_t *)src + first, n - first);
}

static inline void jr_ring_copy_out(const uint8_t *data, uint32_t cap, uint32_t at, void *dst,
                                    uint32_t n)
{
    uint32_t off = at & (cap - 1), first = cap - off < n ? cap - off : n;
    memcpy(dst, data + off, first);
    memcpy((uint8_t *)dst + first, data, n - first);
}

/* --- the service --------------------------------------------------------------------- */

/* struct jr_chan's birth_arm. Before the birth, the application's: 0 (nothing asked: a
 * token's), JR_BIRTH_BELL (asked by the bell set; only from 0), JR_BIRTH_TOKEN (pinned by
 * a wait through the kernel, or an ask withdrawn: never a bell's again). After it, the
 * service's record of what it armed: JR_BIRTH_BORN | JR_RX_ARM_*. */
#define JR_BIRTH_TOKEN JR_RX_ARM_TOKEN
#define JR_BIRTH_BELL JR_RX_ARM_BELL
#define JR_BIRTH_BORN 0x80000000u

/* Lay a new channel out in mem (size bytes, from jr_chan_size) and open the service's
 * view of it. 0, or -EINVAL. The channel starts armed: the application may wait for
 * readiness before its first read (chan_model.py finds the lost wake-up otherwise).
 * Armed for a token, unless the application asked for a bell arm (birth_arm), which
 * saves a new connection's first token and its drain (docs/channels.md, "New
 * connections, session 30"). */
static inline int jr_chan_create(struct jr_chan_svc *s, void *mem, size_t size,
                                 uint32_t rx_cap, uint32_t tx_cap, uint32_t claim_id)
{
    size_t need = jr_chan_size(rx_cap, tx_cap);
    if (need == 0 || size < need || size > UINT32_MAX)
        return -EINVAL;
    struct jr_chan *c = (struct jr_chan *)mem;
    memset(c, 0, offsetof(struct jr_chan, claim_waiting));
    c->version = JR_CHAN_VERSION;
    c->claim_id = claim_id;
    c->rx_cap = rx_cap;
    c->tx_cap = tx_cap;
    c->data_off = (uint32_t)jr_chan_data_off();
    c->size = (uint32_t)size;
    /* After the memset (program order, and the CAS is a release): an application that
     * reads JR_BIRTH_BORN | JR_RX_ARM_BELL and then or-s a token arm in is not wiped by
     * it. Or-ed, not stored, for the same reason. Anything but an ask is a token's. The
     * word is the application's: its own steps change it at most twice (an ask, then a
     * pin), so a fourth failed CAS means a writer that would keep the service here; it
     * gets a token's birth, recorded, which is safe whatever it does next. */
    uint32_t asked = __atomic_load_n(&c->birth_arm, __ATOMIC_RELAXED), born = 0;
    for (int tries = 0; born == 0 && tries < 4; tries++) {
        uint32_t want = asked == JR_BIRTH_BELL ? JR_RX_ARM_BELL : JR_RX_ARM_TOKEN;
        if (__atomic_compare_exchange_n(&c->birth_arm, &asked, JR_BIRTH_BORN | want, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            born = want;
    }
    if (born == 0) {
        born = JR_RX_ARM_TOKEN;
        (void)JR_XCHG(&c->birth_arm, JR_BIRTH_BORN | JR_RX_ARM_TOKEN);
    }
    __atomic_fetch_or(&c->rx_armed, born, __ATOMIC_SEQ_CST);
    *s = (struct jr_chan_svc){
        .shm = c,
        .rx_data = (uint8_t *)mem + c->data_off,
        .tx_data = (uint8_t *)mem + c->data_off + rx_cap,
        .rx_cap = rx_cap,
        .tx_cap = tx_cap,
        .arena = -1,
        .revert_fd = -1,
        .born_bell = born == JR_RX_ARM_BELL,
    };
    JR_STORE(&c->magic, JR_CHAN_MAGIC); /* last: it publishes the header (release) */
    return 0;
}

/* Bytes put in rx that the application has not taken, or -1 if its head is impossible.
 * Left there when its end hangs up, they were lost: a reset, as Linux's close with
 * unread data (RFC 1122 §4.2.2.13). */
static inline int64_t jr_chan_svc_rx_unread(const struct jr_chan_svc *s)
{
    uint32_t used = s->rx_tail - JR_LOAD(&s->shm->rx.head);
    return used > s->rx_cap ? -1 : (int64_t)used;
}

/* Room in rx, or -1 if the application's head is impossible. */
static inline int64_t jr_chan_svc_rx_room(const struct jr_chan_svc *s)
{
    uint32_t used = s->rx_tail - JR_LOAD(&s->shm->rx.head);
    return used > s->rx_cap ? -1 : (int64_t)(s->rx_cap - used);
}

/* Readable, step 1: copy up to n bytes into rx and publish them (release), then
 * fence and take the application's arm: if it was set, the caller calls
 * jr_chan_svc_token_sent, then sends a token. *put gets the bytes copied. Returns action bits. */
static inline int jr_chan_svc_rx_put(struct jr_chan_svc *s, const void *src, uint32_t n,
                                     uint32_t *put)
{
    *put = 0;
    int64_t room = jr_chan_svc_rx_room(s);
    if (room < 0)
        return JR_CHAN_BROKEN;
    uint32_t k = n < room ? n : (uint32_t)room;
    if (k == 0)
        return 0;
    jr_ring_copy_in(s->rx_data, s->rx_cap, s->rx_tail, src, k);
    s->rx_tail += k;
    JR_STORE(&s->shm->rx.tail, s->rx_tail);
    *put = k;
    JR_FENCE(); /* the tail store before the look at rx_armed */
    uint32_t armed = JR_XCHG(&s->shm->rx_armed, 0);
    /* Any arm but a bell's alone wants a token: a value the application made up costs
     * it a token, never a missed wake-up. */
    return ((armed & ~JR_RX_ARM_BELL) ? JR_CHAN_SEND_TOKEN : 0) |
           ((armed & JR_RX_ARM_BELL) ? JR_CHAN_RING_BELL : 0);
}

/* Before each token the service sends (JR_CHAN_SEND_TOKEN, jr_chan_svc_retoken): the
 * application drains only when the counts differ, so a read that empties the ring
 * costs no recv when no token was sent. Counted before the send, so a reader may find
 * the count ahead of the socket (one recv that meets EAGAIN), never a queued token it
 * does not count (which it would meet as readiness again and again, spinning). */
static inline void jr_chan_svc_token_sent(struct jr_chan_svc *s)
{
    JR_STORE(&s->shm->tokens_sent, s->shm->tokens_sent + 1);
}

/* rx_putting (docs/channels.md, "No stale token for a blocking reader"): set, with the
 * rx.tail the put will have published in rx_put_end, before a put publishes its tail
 * (the tail's store is a release) or before a re-token request is taken (its xchg is
 * a release); cleared (release) after the token's count and send. A blocking reader
 * that took the bytes up to rx_put_end waits it out before it returns
 * (jr_chan_app_token_owed), so no token for bytes it took can reach the socket after it
 * returned. One that did not take them need not wait: their token is not stale. */
static inline void jr_chan_svc_putting(struct jr_chan_svc *s, uint32_t end)
{
    __atomic_store_n(&s->shm->rx_put_end, end, __ATOMIC_RELAXED);
    JR_STORE(&s->shm->rx_putting, 1); /* release: the end before the flag */
}

static inline void jr_chan_svc_put_done(struct jr_chan_svc *s)
{
    JR_STORE(&s->shm->rx_putting, 0);
}

/* The application asked for a token (it cancelled an arm and left bytes): 1 if the
 * caller must send one. Checked whenever the application's bytes wake the service. */
static inline int jr_chan_svc_retoken(struct jr_chan_svc *s)
{
    return JR_XCHG(&s->shm->rx_retoken, 0) != 0;
}

/* How the service arms this channel's flags (JR_ARMED_*). */
static inline uint32_t jr_chan_svc_arm_kind(const struct jr_chan_svc *s)
{
    return s->arena_door != NULL ? JR_ARMED_DOOR : JR_ARMED_SOCKET;
}

/* rx is full and the service has more: arm, fence, look again. Returns the room now
 * (>0: go on putting; 0: sleep until the application's bytes; -1: broken). */
static inline int64_t jr_chan_svc_rx_wait_room(struct jr_chan_svc *s)
{
    __atomic_store_n(&s->shm->svc_rx_armed, jr_chan_svc_arm_kind(s), __ATOMIC_RELAXED);
    JR_FENCE();
    return jr_chan_svc_rx_room(s);
}

/* No byte after the last rx_put; the caller then shuts down its writing side. */
static inline void jr_chan_svc_rx_eof(struct jr_chan_svc *s)
{
    JR_STORE(&s->shm->rx_eof, 1);
    s->rx_shut = 1; /* the service's own copy: the shared flag is the application's too */
}

/* Bytes waiting in tx that the service has not taken, or -1 if the application's tail
 * is impossible: more than tx holds past the head the service last published, or back
 * below bytes the service already took. */
static inline int64_t jr_chan_svc_tx_avail(const struct jr_chan_svc *s)
{
    uint32_t used = JR_LOAD(&s->shm->tx.tail) - s->tx_head, taken = s->tx_seen - s->tx_head;
    return used > s->tx_cap || used < taken ? -1 : (int64_t)(used - taken);
}

/* Writable, the last step: give n bytes taken from tx back to the application (n <=
 * tx_seen - tx_head), then fence and, once tx has at least min_room free, take the
 * writer's arm: JR_CHAN_DRAIN tells the caller to read the filler away so that the
 * writer's socket turns writable. The store-buffering pair with the writer's arm,
 * fence, look at tx.head. A writer that finds less room than min_room still uses it; one
 * that slept stays asleep until a release leaves min_room (Linux's sk_stream_write_space:
 * a writer woken for every acknowledgment writes a few bytes and sleeps again). Every
 * byte given back eventually leaves the whole ring free, so no wake-up is lost. */
static inline int jr_chan_svc_tx_release(struct jr_chan_svc *s, uint32_t n, uint32_t min_room)
{
    if (n == 0)
        return 0;
    s->tx_head += n;
    JR_STORE(&s->shm->tx.head, s->tx_head);
    JR_FENCE(); /* the head store before the looks at tx.tail and tx_armed */
    uint32_t used = JR_LOAD(&s->shm->tx.tail) - s->tx_head;
    if (used <= s->tx_cap && s->tx_cap - used < min_room)
        return 0;
    return JR_XCHG(&s->shm->tx_armed, 0) ? JR_CHAN_DRAIN : 0;
}

/* Take up to n more bytes of tx in place, without returning their space: the caller
 * sends them straight from tx_data and releases them once they are acknowledged (the
 * send buffer is the ring, as TAS's). tx's bytes then never pass through the service's
 * memory; an application that rewrites them after writing changes only what its own
 * connection sends. The bytes taken, or -1 (an impossible tail). */
static inline int64_t jr_chan_svc_tx_peek(struct jr_chan_svc *s, uint32_t n)
{
    int64_t avail = jr_chan_svc_tx_avail(s);
    if (avail < 0)
        return -1;
    uint32_t k = n < avail ? n : (uint32_t)avail;
    s->tx_seen += k;
    return k;
}

/* Writable, step 1 for a copying caller: copy up to n bytes out of tx into dst (private
 * memory) and return their space at once (jr_chan_svc_tx_release), after any bytes
 * taken in place (tx_peek's caller releases those first, as it gives the flow up). */
static inline int jr_chan_svc_tx_take(struct jr_chan_svc *s, void *dst, uint32_t n,
                                      uint32_t *took)
{
    *took = 0;
    int64_t avail = jr_chan_svc_tx_avail(s);
    if (avail < 0 || s->tx_seen != s->tx_head)
        return JR_CHAN_BROKEN;
    uint32_t k = n < avail ? n : (uint32_t)avail;
    if (k == 0)
        return 0;
    jr_ring_copy_out(s->tx_data, s->tx_cap, s->tx_seen, dst, k);
    s->tx_seen += k;
    *took = k;
    return jr_chan_svc_tx_release(s, k, 0);
}

/* tx is empty and the service will sleep: the caller first drains what the application
 * queued (doorbells, stale filler: the ring is empty, so no filler stands for a full
 * ring), then calls this: arm, fence, look again. Returns the bytes waiting (>0: take
 * them instead of sleeping; 0: sleep until the socket is readable; -1: broken). */
static inline int64_t jr_chan_svc_tx_wait(struct jr_chan_svc *s)
{
    __atomic_store_n(&s->shm->svc_tx_armed, jr_chan_svc_arm_kind(s), __ATOMIC_RELAXED);
    JR_FENCE();
    return jr_chan_svc_tx_avail(s);
}

/* The application shut its writing side down (after the bytes before tx.tail). */
static inline int jr_chan_svc_tx_eof(const struct jr_chan_svc *s)
{
    return JR_LOAD(&s->shm->tx_eof) != 0;
}

/* --- the service's socket steps -------------------------------------------------------
 * The steps above with their system calls, in the one order the protocol allows: the
 * data plane and the Python pump (a flow handed back keeps its channel) both call these,
 * so the rules have one copy. fd: the service's end of the connection's socket,
 * non-blocking. */

/* How many descriptors control message h carries (SCM_RIGHTS; 0 for any other), and
 * the i-th of them. */
static inline size_t jr_cmsg_nfds(const struct cmsghdr *h)
{
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
        return 0;
    return (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
}

static inline int jr_cmsg_fd(const struct cmsghdr *h, size_t i)
{
    int fd;
    memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
    return fd;
}

/* recv(2) into iov from the application's socket, with the descriptors that came with
 * these bytes in *fd and *door (-1: none; door may be NULL: no second one kept). A claim
 * carries at most two, an arena's and its door's (chan_claim.h); a revert request one
 * (jr_chan_svc_drain). Any other, or any of a message cut short (MSG_CTRUNC), is
 * closed. */
static inline ssize_t jr_chan_svc_recv2(int sock, struct iovec *iov, int iovcnt, int *fd,
                                        int *door)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 4)];
    } ctl;
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt,
                       .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    *fd = -1;
    if (door != NULL)
        *door = -1;
    ssize_t n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return -errno;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h != NULL; h = CMSG_NXTHDR(&m, h)) {
        size_t count = jr_cmsg_nfds(h);
        for (size_t i = 0; i < count; i++) {
            int got = jr_cmsg_fd(h, i);
            if (*fd < 0 && !(m.msg_flags & MSG_CTRUNC))
                *fd = got;
            else if (door != NULL && *door < 0 && !(m.msg_flags & MSG_CTRUNC))
                *door = got;
            else
                close(got);
        }
    }
    return n;
}

/* jr_chan_svc_recv2 keeping one descriptor: a connection's first bytes read where no
 * door is wanted. */
static inline ssize_t jr_chan_svc_recv(int sock, struct iovec *iov, int iovcnt, int *fd)
{
    return jr_chan_svc_recv2(sock, iov, iovcnt, fd, NULL);
}

/* Read away what the application queued: doorbells, re-token requests, filler, and a
 * revert request (JR_CHAN_REVERT_BYTE with the application's new socket, which is kept
 * in s->revert_fd; a second one is closed). A short read took all there was (one system
 * call, not a second that meets EAGAIN); a byte that comes after it leaves the socket
 * readable, so the caller looks again. A read that brought a descriptor stopped at its
 * message (the kernel never merges one across it): the drain reads on. */
static inline void jr_chan_svc_drain(struct jr_chan_svc *s, int fd)
{
    char junk[4096];
    /* At most a few messages with descriptors a drain: an application that sends
     * nothing else would keep it here (what is left keeps the socket readable). */
    for (int with_fds = 0; with_fds < 4;) {
        struct iovec iov = {junk, sizeof junk};
        int got;
        ssize_t n = jr_chan_svc_recv(fd, &iov, 1, &got);
        if (got >= 0) {
            if (s->revert_fd < 0)
                s->revert_fd = got;
            else
                close(got);
            with_fds++;
            continue;
        }
        if (n != (ssize_t)sizeof junk)
            return;
    }
}

/* --- a queue of slot numbers: the bells' ---------------------------------------------
 * One producer (the service's data-plane thread), one consumer (the application, under
 * its own lock). Slots are published by a release store of tail and taken after an
 * acquire load of it; their space comes back the same way through head. The producer
 * writes from its own copy of tail (*tail), so a head the consumer made up can only make
 * the queue look full (a push then counts as lost), never move a write out of ids. */
static inline int jr_slotq_push(uint32_t *ids, uint32_t cap, uint32_t *tail, uint32_t *tail_pub,
                                const uint32_t *head, uint32_t slot)
{
    uint32_t t = *tail;
    if (t - JR_LOAD(head) >= cap)
        return 0;
    ids[t & (cap - 1)] = slot;
    *tail = t + 1;
    JR_STORE(tail_pub, t + 1);
    return 1;
}

/* The consumer: up to n slots into out (a slot may come twice: the caller looks at the
 * channel, which tells the truth). */
static inline uint32_t jr_slotq_take(const uint32_t *ids, uint32_t cap, uint32_t *head,
                                     const uint32_t *tail, uint32_t *out, uint32_t n)
{
    uint32_t h = *head, avail = JR_LOAD(tail) - h;
    uint32_t k = n < avail ? n : avail;
    if (k > cap)
        k = cap;
    for (uint32_t i = 0; i < k; i++)
        out[i] = ids[(h + i) & (cap - 1)];
    JR_STORE(head, h + k); /* the slots' space back to the producer */
    return k;
}

/* The consumer is about to sleep: arm, fence, look again (the store-buffering pair with
 * the producer's push, fence, xchg of armed). 1 when there is something to take (do not
 * sleep), 0 when the producer's wake-up will say. lost_seen: the lost count the consumer
 * has already answered by looking at everything. */
static inline int jr_slotq_arm(uint32_t *armed, const uint32_t *tail, const uint32_t *head,
                               const uint32_t *lost, uint32_t lost_seen)
{
    __atomic_store_n(armed, 1, __ATOMIC_RELAXED);
    JR_FENCE(); /* the arm before the look at tail and lost */
    return JR_LOAD(tail) != *head || JR_LOAD(lost) != lost_seen;
}

/* --- the process's bell (struct jr_bell) --------------------------------------------- */

/* The service: push slot (its rx owes a token), then wake the application if it sleeps. */
static inline void jr_bell_ring(struct jr_bell *b, uint32_t slot)
{
    if (!jr_slotq_push(b->ids, b->cap, &b->tail, &b->tail, &b->head, slot))
        JR_STORE(&b->lost, b->lost + 1); /* the application looks at every channel */
    JR_FENCE(); /* the push before the look at armed */
    if (JR_XCHG(&b->armed, 0)) {
        uint64_t one = 1;
        /* A failure is EAGAIN (the counter is full): the application wakes anyway. */
        ssize_t w = write(b->efd, &one, sizeof one);
        (void)w;
    }
}

/* The application: take up to n slots (a slot may come twice, or be a finished
 * connection's: the caller looks at the channel, which tells the truth). */
static inline uint32_t jr_bell_take(struct jr_bell *b, uint32_t *out, uint32_t n)
{
    return jr_slotq_take(b->ids, b->cap, &b->head, &b->tail, out, n);
}

/* The application is about to sleep on the eventfd: arm, fence, look again. 1 when
 * there is something to take (do not sleep), 0 when the eventfd will say. lost_seen:
 * the `lost` count the application has already answered with a look at everything. */
static inline int jr_bell_arm(struct jr_bell *b, uint32_t lost_seen)
{
    return jr_slotq_arm(&b->armed, &b->tail, &b->head, &b->lost, lost_seen);
}

/* --- the arena's bell (struct jr_arena_bell; service mode) ---------------------------- */

/* The service's lock of one arena's wake-ups (struct jr_arena_wake): acquire on taking
 * it, release on letting go, so one holder's queue indices and door are the next's. */
static inline void jr_wake_lock(struct jr_arena_wake *w)
{
    pthread_mutex_lock(&w->lock);
}

static inline void jr_wake_unlock(struct jr_arena_wake *w)
{
    pthread_mutex_unlock(&w->lock);
}

/* The service: push slot on its arena's bell (its rx owes the application a look), then
 * write the door if the application sleeps. 0, or -errno when the bell cannot wake it
 * (no door, or the application's end is gone): the caller sends a token instead. The
 * door is written under the lock: a door dropped meanwhile is closed under it too, so
 * the byte never goes to a descriptor that has since taken its number. */
static inline int jr_arena_bell_ring(struct jr_arena_wake *w, uint32_t slot)
{
    if (w == NULL || w->bell == NULL)
        return -ENOTCONN;
    int rc = 0;
    jr_wake_lock(w);
    if (w->door_fd < 0) {
        jr_wake_unlock(w);
        return -ENOTCONN;
    }
    struct jr_arena_bell *b = w->bell;
    if (!jr_slotq_push(b->ids, JR_ARENA_BELL_CAP, &w->tail, &b->tail, &b->head, slot))
        JR_STORE(&b->lost, ++w->lost); /* the application looks at every channel */
    JR_FENCE(); /* the push before the look at armed */
    if (w->counts != NULL)
        __atomic_fetch_add(&w->counts->pushes, 1, __ATOMIC_RELAXED);
    if (JR_XCHG(&b->armed, 0)) {
        char wake = 'W';
        if (w->counts != NULL)
            __atomic_fetch_add(&w->counts->wakes, 1, __ATOMIC_RELAXED);
        if (send(w->door_fd, &wake, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1 && errno != EAGAIN)
            rc = -errno; /* EAGAIN: bytes already queued wake it */
    }
    jr_wake_unlock(w);
    return rc;
}

/* The application: take up to n slots (each checked by the caller against its slots). */
static inline uint32_t jr_arena_bell_take(struct jr_arena_bell *b, uint32_t *out, uint32_t n)
{
    return jr_slotq_take(b->ids, JR_ARENA_BELL_CAP, &b->head, &b->tail, out, n);
}

/* The application's epoll_wait is about to sleep (jr_slotq_arm). */
static inline int jr_arena_bell_arm(struct jr_arena_bell *b, uint32_t lost_seen)
{
    return jr_slotq_arm(&b->armed, &b->tail, &b->head, &b->lost, lost_seen);
}

/* The application: make the service look (the first ring after it armed writes the
 * eventfd; later ones are free until it arms again). */
static inline void jr_door_ring(struct jr_door *d)
{
    if (JR_XCHG(&d->armed, 0)) {
        uint64_t one = 1;
        ssize_t w = write(d->efd, &one, sizeof one); /* EAGAIN: it wakes anyway */
        (void)w;
    }
}

/* The service, before it arms its channels and sleeps. */
static inline void jr_door_arm(struct jr_door *d)
{
    __atomic_store_n(&d->armed, 1, __ATOMIC_RELAXED);
    JR_FENCE(); /* before any channel's flag: a ring that takes one finds this armed */
}

/* Send one token, counted first (jr_chan_svc_token_sent says why), or ring the
 * process's bell for a channel that has one (no token on the socket, none counted).
 * 0 or -errno. */
static inline int jr_chan_svc_send_token(struct jr_chan_svc *s, int fd)
{
    char token = 'T';
    if (s->bell != NULL) {
        jr_bell_ring(s->bell, s->slot);
        return 0;
    }
    jr_chan_svc_token_sent(s);
    if (send(fd, &token, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {
        if (s->wake != NULL && s->wake->counts != NULL)
            __atomic_fetch_add(&s->wake->counts->tokens, 1, __ATOMIC_RELAXED);
        return 0;
    }
    int err = errno;
    /* Not sent, so not owed: a blocking reader that settles (jr_chan_app_token_owed)
     * must not wait for it. Only the service writes the count. */
    JR_STORE(&s->shm->tokens_sent, s->shm->tokens_sent - 1);
    return -err;
}

/* Answer the application's re-token request, if it made one: a token, unless rx's EOF
 * was given. After it the caller has shut its end for writing (the EOF, which keeps the
 * reader's end readable for ever, so no token is owed), and a send would fail with
 * EPIPE, which is no sign that the application is gone: its bytes in tx still count.
 * 0, or -errno from the send (EAGAIN: tokens already queued wake it). */
static inline int jr_chan_svc_answer_retoken(struct jr_chan_svc *s, int fd)
{
    if (!__atomic_load_n(&s->shm->rx_retoken, __ATOMIC_RELAXED))
        return 0; /* the common case: no fence, no flag */
    /* The flag before the take; the take's xchg is a release, so a reader that finds
     * the request taken (its acquire load or xchg reads this 0) sees the flag. */
    jr_chan_svc_putting(s, s->rx_tail); /* the bytes rx holds now are the ones it is for */
    int rc = 0;
    if (jr_chan_svc_retoken(s) && !s->rx_shut) {
        rc = jr_chan_svc_send_token(s, fd);
        rc = rc == -EAGAIN ? 0 : rc;
    }
    jr_chan_svc_put_done(s);
    return rc;
}

/* Put up to n bytes into rx and send the token they owe: the bytes put, or -EPROTO
 * (an impossible index: reset the connection), or -errno from the send. */
static inline int64_t jr_chan_svc_deliver(struct jr_chan_svc *s, int fd, const void *src,
                                          uint32_t n)
{
    uint32_t put;
    int64_t rc;
    int64_t room = jr_chan_svc_rx_room(s);
    jr_chan_svc_putting(s, s->rx_tail + (uint32_t)(room < 0 ? 0 : room < n ? room : n));
    int act = jr_chan_svc_rx_put(s, src, n, &put);
    rc = put;
    if (act & JR_CHAN_BROKEN)
        rc = -EPROTO;
    else if ((act & JR_CHAN_RING_BELL) && jr_arena_bell_ring(s->wake, s->slot) < 0)
        act |= JR_CHAN_SEND_TOKEN; /* the bell cannot wake it: the socket will */
    if (rc >= 0 && (act & JR_CHAN_SEND_TOKEN)) {
        int sent = jr_chan_svc_send_token(s, fd);
        if (sent < 0 && sent != -EAGAIN) /* EAGAIN: tokens already queued wake it */
            rc = sent;
    }
    jr_chan_svc_put_done(s);
    return rc;
}

/* Take up to n bytes from tx into dst (the service's own memory), and turn the writer's
 * socket writable if it waits: the bytes taken, or -EPROTO. */
static inline int64_t jr_chan_svc_collect(struct jr_chan_svc *s, int fd, void *dst, uint32_t n)
{
    uint32_t took;
    int act = jr_chan_svc_tx_take(s, dst, n, &took);
    if (act & JR_CHAN_BROKEN)
        return -EPROTO;
    if (act & JR_CHAN_DRAIN)
        jr_chan_svc_drain(s, fd);
    return took;
}

/* What the service may wait for on a channel. */
enum jr_chan_wait {
    JR_CHAN_WAIT_ROOM = 1,  /* rx was full with more to deliver */
    JR_CHAN_WAIT_BYTES = 2, /* tx was empty, the application has not shut down */
};

/* Before the service sleeps on fd: drain the application's bytes, then look at
 * everything they may have said (a byte says only "look", so looking comes after the
 * drain, never before: the stress test found a drain for tx that ate the bell of a read
 * that made rx room): the re-token request, then each thing waited for, armed and looked
 * at again. Returns 1 when the service may sleep until fd is readable, 0 when there is
 * work now (room, bytes), -EPROTO when an index is impossible, -errno from a send. */
static inline int jr_chan_svc_arm(struct jr_chan_svc *s, int fd, int waits);

static inline int jr_chan_svc_idle(struct jr_chan_svc *s, int fd, int waits)
{
    jr_chan_svc_drain(s, fd);
    return jr_chan_svc_arm(s, fd, waits);
}

/* jr_chan_svc_idle without the drain, for a caller that knows nothing is queued on fd
 * (its epoll has reported no bytes since its last drain): bytes that come meanwhile
 * leave fd readable, which wakes it to drain and look again. */
static inline int jr_chan_svc_arm(struct jr_chan_svc *s, int fd, int waits)
{
    if (s->door != NULL && waits != 0)
        jr_door_arm(s->door); /* before this channel's flags (struct jr_door) */
    if (s->arena_door != NULL && waits != 0) {
        /* The arena's door before this channel's flags, as struct jr_door's: an
         * application that takes a flag armed JR_ARMED_DOOR then finds the door set,
         * unless another ring took it, whose write wakes the service all the same. */
        __atomic_store_n(s->arena_door, 1, __ATOMIC_RELAXED);
        JR_FENCE();
    }
    int rc = jr_chan_svc_answer_retoken(s, fd);
    if (rc < 0)
        return rc;
    if (waits & JR_CHAN_WAIT_ROOM) {
        int64_t room = jr_chan_svc_rx_wait_room(s);
        if (room != 0)
            return room < 0 ? -EPROTO : 0;
    }
    if (waits & JR_CHAN_WAIT_BYTES) {
        int64_t avail = jr_chan_svc_tx_wait(s);
        if (avail != 0)
            return avail < 0 ? -EPROTO : 0;
        /* tx_eof is looked at again too: an application that rings a door (struct
         * jr_door) may have stored it and found the door not yet armed. */
        if (jr_chan_svc_tx_eof(s))
            return 0;
    }
    return 1;
}

/* --- leaving ring mode (JR_CHAN_REVERT_BYTE) ------------------------------------------ */

/* Whether the application asked to leave ring mode (a drain kept its new socket). */
static inline int jr_chan_svc_revert_asked(const struct jr_chan_svc *s)
{
    return s->revert_fd >= 0;
}

/* Switch to the application's new socket. The caller took every byte before tx.tail
 * first (the application wrote none after its request). The new socket takes fd's place
 * (dup3: the number the caller holds, and registers nowhere yet, stays valid), under
 * fd's name (bind, once dup3 closed the old end: getpeername on the application's end
 * spells the connection, as before; best effort). rx's bytes the application never read
 * wait for jr_chan_svc_flush. 0; -EPROTO when the application made up its head or sent a
 * descriptor that is no unix stream socket (reset the connection); -errno. */
static inline int jr_chan_svc_revert(struct jr_chan_svc *s, int fd)
{
    int nfd = s->revert_fd, domain = 0, type = 0;
    socklen_t dl = sizeof domain, tl = sizeof type;
    s->revert_fd = -1;
    uint32_t head = JR_LOAD(&s->shm->rx.head);
    if (s->rx_tail - head > s->rx_cap ||
        getsockopt(nfd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) != 0 || domain != AF_UNIX ||
        getsockopt(nfd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM) {
        close(nfd);
        return -EPROTO;
    }
    struct sockaddr_un name;
    socklen_t nl = sizeof name;
    int named = getsockname(fd, (struct sockaddr *)&name, &nl) == 0 && nl > sizeof(sa_family_t);
    int fdflags = fcntl(fd, F_GETFD), fl = fcntl(nfd, F_GETFL);
    int rc = fl < 0 || fcntl(nfd, F_SETFL, fl | O_NONBLOCK) < 0 ||
             dup3(nfd, fd, fdflags > 0 && (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0 ? -errno : 0;
    close(nfd);
    if (rc < 0)
        return rc;
    if (named)
        (void)bind(fd, (struct sockaddr *)&name, nl);
    s->flush_head = head;
    /* The slot stays the service's until the flush is done (released then); a copy of
     * the old descriptor left in another process finds this, not a live channel, and
     * its writes fail (EPIPE) instead of going into a tx nobody reads. */
    JR_STORE(&s->shm->magic, JR_CHAN_REVERTED);
    s->reverted = 1;
    return 0;
}

/* After jr_chan_svc_revert: send rx's bytes the application never read to its new
 * socket (fd), from the service's own indices. The bytes still to send (0: done, the
 * channel may be released; > 0: wait until fd is writable), or -errno. */
static inline int64_t jr_chan_svc_flush(struct jr_chan_svc *s, int fd)
{
    while (s->flush_head != s->rx_tail) {
        uint32_t off = s->flush_head & (s->rx_cap - 1), left = s->rx_tail - s->flush_head;
        uint32_t run = s->rx_cap - off < left ? s->rx_cap - off : left;
        ssize_t n = send(fd, s->rx_data + off, run, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? (int64_t)left : -errno;
        s->flush_head += (uint32_t)n;
    }
    return 0;
}

/* --- the application ----------------------------------------------------------------- */

/* The application's bell set, for a slot whose claim has no verdict yet: ask that the
 * channel be born armed for the bell. Only from nothing asked: a token's pinned by a wait
 * through the kernel stays (jr_chan_birth_token), and after the birth it is too late. */
static inline void jr_chan_birth_ask(struct jr_chan *slot)
{
    uint32_t none = 0;
    __atomic_compare_exchange_n(&slot->birth_arm, &none, JR_BIRTH_BELL, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_RELAXED);
}

/* The application waits, or may, through the kernel (poll, select, a blocking read,
 * another epoll set) for a slot whose claim may have no verdict yet, or leaves the bell
 * before it: make sure the channel is, or was, born with a token arm. Before the birth
 * this pins one (an ask is withdrawn, and none can come after). If it was born for the
 * bell, a token is armed now (after its layout: the CAS that recorded the birth came
 * after it), then a fence, and 1 is returned: a put before this arm rang only the bell,
 * so the caller looks at the verdict and rx and asks a token for bytes there (a
 * re-token request). Only ever toward tokens, so a stale call costs a token at worst. */
static inline int jr_chan_birth_token(struct jr_chan *slot)
{
    uint32_t v = 0;
    if (__atomic_compare_exchange_n(&slot->birth_arm, &v, JR_BIRTH_TOKEN, 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        return 0; /* pinned before the birth */
    if (v == JR_BIRTH_BELL)
        v = JR_XCHG(&slot->birth_arm, JR_BIRTH_TOKEN); /* withdrawn, unless born since */
    if (v != (JR_BIRTH_BORN | JR_RX_ARM_BELL))
        return 0; /* born (or to be born) with a token arm */
    __atomic_fetch_or(&slot->rx_armed, JR_RX_ARM_TOKEN, __ATOMIC_SEQ_CST);
    JR_FENCE(); /* the arm before the caller's look */
    return 1;
}

/* Open the application's view of a mapping of size bytes. 0, or -EPROTO if the header
 * does not describe a channel that fits. */
static inline int jr_chan_attach(struct jr_chan_app *a, void *mem, size_t size)
{
    struct jr_chan *c = (struct jr_chan *)mem;
    if (size < sizeof *c || JR_LOAD(&c->magic) != JR_CHAN_MAGIC ||
        c->version != JR_CHAN_VERSION ||
        c->data_off != jr_chan_data_off() || jr_chan_size(c->rx_cap, c->tx_cap) == 0 ||
        jr_chan_size(c->rx_cap, c->tx_cap) > size)
        return -EPROTO;
    *a = (struct jr_chan_app){
        .shm = c,
        .rx_data = (const uint8_t *)mem + c->data_off,
        .tx_data = (uint8_t *)mem + c->data_off + c->rx_cap,
        .rx_cap = c->rx_cap,
        .tx_cap = c->tx_cap,
    };
    return 0;
}

/* Arm rx for kind (JR_RX_ARM_*), or-ed into rx_armed so that another thread's arm
 * stays, then fence: the arm before any look at rx.tail that follows (the
 * store-buffering pair with the service's put, fence, take of rx_armed). */
static inline void jr_chan_app_arm(struct jr_chan_app *a, uint32_t kind)
{
    __atomic_fetch_or(&a->shm->rx_armed, kind, __ATOMIC_SEQ_CST);
    JR_FENCE();
}

/* rx bytes not yet read. */
static inline uint32_t jr_chan_app_rx_avail(const struct jr_chan_app *a)
{
    return JR_LOAD(&a->shm->rx.tail) - a->shm->rx.head;
}

/* Take up to n of the avail bytes; then ring the service if it waits for room. */
static inline uint32_t jr_chan_app_rx_take(struct jr_chan_app *a, const struct jr_chan_io *io,
                                           uint8_t *dst, uint32_t n, uint32_t avail)
{
    uint32_t head = a->shm->rx.head;
    uint32_t k = n < avail ? n : avail;
    jr_ring_copy_out(a->rx_data, a->rx_cap, head, dst, k);
    JR_STORE(&a->shm->rx.head, head + k);
    JR_FENCE(); /* the head store before the look at svc_rx_armed */
    jr_chan_app_ring(io, JR_XCHG(&a->shm->svc_rx_armed, 0));
    return k;
}

/* A read cancelled its arm and leaves bytes in rx: no token will come for them, so ask
 * the service for one (the re-token request), or readiness would hide them. The door
 * too, when the service armed it (a system call only then): a service whose writer is
 * blocked does not watch the socket, where filler waits (docs/channels.md, "A writer
 * blocked with rx full"), and looks at the request when the door rings. */
static inline void jr_chan_app_retoken(struct jr_chan_app *a, const struct jr_chan_io *io)
{
    if (io->unseen != NULL && io->unseen(io->ctx) == 0)
        return; /* the caller's epoll reports them: no system call */
    __atomic_store_n(&a->shm->rx_retoken, 1, __ATOMIC_RELAXED);
    JR_FENCE(); /* the request before the byte that makes the service look */
    if (io->door != NULL)
        (void)io->door(io->ctx);
    io->bell(io->ctx);
}

/* Drain the queued tokens, unless the counts say none was sent since the last drain. */
static inline int jr_chan_app_drain(struct jr_chan_app *a, const struct jr_chan_io *io)
{
    struct jr_chan *c = a->shm;
    if (JR_LOAD(&c->tokens_sent) == c->tokens_taken)
        return 0;
    int n = io->drain(io->ctx);
    if (n == -EAGAIN)
        return 0;
    if (n > 0)
        __atomic_store_n(&c->tokens_taken, c->tokens_taken + (uint32_t)n, __ATOMIC_RELAXED);
    return n < 0 ? n : 0;
}

/* Is the service in a put (or re-token) whose bytes this reader took, so that its token,
 * still to come, will be stale? A put whose tail the reader has not seen owes a token
 * for bytes still unread: not stale, nothing to wait for. */
static inline int jr_chan_app_put_taken(const struct jr_chan *c)
{
    return JR_LOAD(&c->rx_putting) &&
           (int32_t)(__atomic_load_n(&c->rx_put_end, __ATOMIC_RELAXED) - c->rx.head) <= 0;
}

/* A blocking read that took bytes is about to return with rx empty and armed: may a
 * token for bytes it took still reach the socket? Then it must not return yet
 * (docs/channels.md, "No stale token for a blocking reader"): select or poll would
 * find the socket readable with nothing in rx, and the blocking read that follows
 * would sleep for ever (iperf3's control connection hung so). A re-token request not
 * yet taken is withdrawn: rx is empty and armed, so nothing is owed for it. */
static inline int jr_chan_app_token_owed(struct jr_chan_app *a)
{
    struct jr_chan *c = a->shm;
    /* Bytes came since the look that found rx empty: readiness is true whatever the
     * socket holds, and the next read takes them (and drains). Under a bulk stream
     * this ends the settling at once: a round per read cost iperf3 two thirds of its
     * rate, in tokens the service sent for each re-arm. */
    if (jr_chan_app_rx_avail(a) > 0)
        return 0;
    if (JR_LOAD(&c->rx_retoken))
        (void)JR_XCHG(&c->rx_retoken, 0); /* 0: the service took it and set rx_putting */
    /* A put whose bytes this read did not take is no reason to wait: under a bulk
     * stream the common case. A flag and end read across two puts is safe: the first
     * one's clear came after its count, which the count's look below sees. */
    return jr_chan_app_put_taken(c) || JR_LOAD(&c->tokens_sent) != c->tokens_taken;
}

/* Until the service's put or re-token whose bytes this read took has sent its token
 * (rx_putting clear): a few spins, then yields, then 1000 naps of 50 us (about 100 ms
 * with the default 50 us timer slack). A service stalled longer than that (or dead) is
 * not waited for: the read returns, and at worst its caller meets a spurious
 * readiness, as before. */
static inline void jr_chan_app_wait_put(struct jr_chan_app *a)
{
    const struct timespec nap = {.tv_nsec = 50 * 1000};
    for (unsigned i = 0; jr_chan_app_put_taken(a->shm) && i < 1000 + 128; i++) {
        if (i < 64)
            JR_CPU_RELAX();
        else if (i < 128)
            sched_yield();
        else
            nanosleep(&nap, NULL);
    }
}

/* read(2) on a ring-mode connection: bytes read, 0 at EOF, -EAGAIN (non-blocking and
 * nothing to read), or -errno from a callback. The steps are chan_model.py's Rx. On
 * return, bytes left in rx have a token queued or owed, and an empty rx is armed, so
 * the socket's level- and edge-triggered readiness tell the truth, but for a token
 * left from bytes already read (a spurious wake-up, counted). */
static inline ssize_t jr_chan_read(struct jr_chan_app *a, const struct jr_chan_io *io,
                                   void *buf, size_t len, int block)
{
    struct jr_chan *c = a->shm;
    uint32_t want = len > (1u << 30) ? (1u << 30) : (uint32_t)len;
    uint32_t got = 0;
    int guarded = 1; /* a token is queued or owed for what rx holds (true on entry) */
    int woken = 0;
    int settles = 0; /* rounds in a row a blocking read waited for a token owed */
    if (want == 0)
        return 0;
    for (;;) {
        uint32_t avail = jr_chan_app_rx_avail(a);
        if (avail > 0) {
            uint32_t k = jr_chan_app_rx_take(a, io, (uint8_t *)buf + got, want - got, avail);
            got += k;
            /* The bound is on rounds that find nothing new: a read that takes bytes
             * between rounds has made progress (bounded by want), and under a stream
             * into a small ring a read meets many puts in flight. Counted per read, the
             * fourth left the last one's token stale (the stress test's 16-byte ring,
             * under load, about one run in 30). */
            settles = 0;
            if (avail > k) { /* the buffer is full and bytes remain */
                if (!guarded)
                    jr_chan_app_retoken(a, io);
                return got;
            }
        } else if (woken) {
            a->spurious++;
        }
        /* rx is empty as far as this look saw: drain the tokens, arm, look again. */
        int rc = jr_chan_app_drain(a, io);
        if (rc < 0)
            return got > 0 ? (ssize_t)got : rc;
        guarded = 0;
        /* Or, not store: another thread's poll may have armed a token meanwhile. */
        uint32_t mine = jr_chan_app_arm_kind(io);
        jr_chan_app_arm(a, mine); /* before the look at rx.tail and at the arm's kind */
        uint32_t now = jr_chan_app_arm_kind(io);
        if (now & ~mine) { /* the bell went off meanwhile: its token too (io->arm) */
            jr_chan_app_arm(a, now & ~mine);
            mine |= now;
        }
        if (jr_chan_app_rx_avail(a) > 0) {
            /* Bytes came in between. If the service took the arm, their token (or push)
             * is on its way; else cancel our arm (only ours: another thread's poll may
             * have armed a token it waits for): nothing comes for them. */
            guarded = (__atomic_fetch_and(&c->rx_armed, ~mine, __ATOMIC_SEQ_CST) & mine) == 0;
            if (got < want)
                continue;
            if (!guarded)
                jr_chan_app_retoken(a, io);
            return got;
        }
        if (got > 0) {
            /* Blocking only: a non-blocking caller handles a spurious readiness with
             * EAGAIN, and a non-blocking read must not wait. The token, once sent, is
             * drained by the round this starts. */
            if (block != 0 && settles < 4 && jr_chan_app_token_owed(a) &&
                jr_chan_blocks(io, &block)) {
                jr_chan_app_wait_put(a);
                settles++;
                /* Armed with rx empty: bytes the next round finds took the arm, so
                 * their token is on its way; and finding none is no spurious wake. */
                guarded = 1;
                woken = 0;
                continue;
            }
            return got;
        }
        if (JR_LOAD(&c->rx_eof)) {
            if (jr_chan_app_rx_avail(a) > 0) /* bytes stored before rx_eof */
                continue;
            return 0;
        }
        if (!jr_chan_blocks(io, &block))
            return -EAGAIN;
        if (!(JR_LOAD(&c->rx_armed) & JR_RX_ARM_TOKEN)) {
            /* A bell arm wakes an epoll_wait, not this poll on the socket: arm a token
             * too, and look again. */
            jr_chan_app_arm(a, JR_RX_ARM_TOKEN);
            if (jr_chan_app_rx_avail(a) > 0 || JR_LOAD(&c->rx_eof))
                continue;
        }
        rc = io->wait(io->ctx, POLLIN);
        if (rc < 0)
            return rc;
        guarded = 1; /* what woke us (a token, or EOF) stays queued */
        woken = 1;
    }
}

/* Where a write's bytes come from (jr_chan_write_from): put n bytes at dst (tx's free
 * space, contiguous), the write's bytes from offset done on. Returns how many it put,
 * 0..n (fewer than n ends the write: a file's end), or -errno. */
typedef ssize_t (*jr_chan_source)(void *ctx, uint8_t *dst, uint32_t n, size_t done);

/* The source of jr_chan_write: a buffer (ctx). */
static inline ssize_t jr_chan_source_buf(void *ctx, uint8_t *dst, uint32_t n, size_t done)
{
    memcpy(dst, (const uint8_t *)ctx + done, n);
    return n;
}

/* Fill tx at index tail with k bytes of the write (from offset done) from source, as at
 * most two contiguous spans (tx wraps). Returns the bytes put (short: the source ran
 * out), or -errno if the source failed before putting any. */
static inline ssize_t jr_chan_fill_tx(struct jr_chan_app *a, uint32_t tail, uint32_t k,
                                      jr_chan_source source, void *ctx, size_t done)
{
    uint32_t off = tail & (a->tx_cap - 1), first = a->tx_cap - off < k ? a->tx_cap - off : k;
    ssize_t got = source(ctx, a->tx_data + off, first, done);
    if (got < (ssize_t)first || first == k)
        return got;
    ssize_t more = source(ctx, a->tx_data, k - first, done + first);
    return more < 0 ? got : got + more;
}

/* tx's free space as the writer sees it. */
static inline uint32_t jr_chan_app_tx_room(const struct jr_chan_app *a)
{
    return a->tx_cap - (a->shm->tx.tail - JR_LOAD(&a->shm->tx.head));
}

/* tx is full: fill the socket until it is unwritable, or until tx has room again (the
 * caller then arms, looks again and writes: the socket may stay writable, which is the
 * truth). 0, or -errno. */
static inline int jr_chan_app_fill(const struct jr_chan_app *a, const struct jr_chan_io *io)
{
    int rc;
    while ((rc = io->fill(io->ctx)) > 0)
        if (jr_chan_app_tx_room(a) > 0)
            return 0;
    return rc;
}

/* write(2) on a ring-mode connection, its bytes from source (jr_chan_source: a buffer,
 * a file): bytes written, -EAGAIN (non-blocking and tx full), or -errno from a callback
 * or the source. Bytes go straight from the source into tx (a file: no bounce buffer).
 * A blocking write returns when every byte is in tx, or the source ran out. The steps
 * are chan_model.py's Tx. On return, a full tx has the socket filled and armed, so
 * EPOLLOUT means room (but in the race docs/channels.md names). */
static inline ssize_t jr_chan_write_from(struct jr_chan_app *a, const struct jr_chan_io *io,
                                         jr_chan_source source, void *ctx, size_t len,
                                         int block)
{
    struct jr_chan *c = a->shm;
    uint32_t want = len > (1u << 30) ? (1u << 30) : (uint32_t)len;
    uint32_t put = 0;
    if (want == 0)
        return 0;
    for (;;) {
        uint32_t tail = c->tx.tail;
        uint32_t room = jr_chan_app_tx_room(a);
        if (room > 0) {
            uint32_t k = room < want - put ? room : want - put;
            ssize_t got = jr_chan_fill_tx(a, tail, k, source, ctx, put);
            if (got <= 0)
                return put > 0 ? (ssize_t)put : got; /* the source's end, or its error */
            JR_STORE(&c->tx.tail, tail + (uint32_t)got);
            put += (uint32_t)got;
            JR_FENCE(); /* the tail store before the look at svc_tx_armed */
            jr_chan_app_ring(io, JR_XCHG(&c->svc_tx_armed, 0));
            if ((uint32_t)got < k)
                return put; /* the source ran out */
            if (put < want)
                continue; /* tx is full now: the next look fills and arms */
            if (k < room)
                return put;
            /* This write filled tx exactly: make the socket unwritable before returning. */
        }
        int rc = jr_chan_app_fill(a, io);
        if (rc < 0 && rc != -EAGAIN)
            return put > 0 ? (ssize_t)put : rc;
        __atomic_store_n(&c->tx_armed, 1, __ATOMIC_RELAXED);
        JR_FENCE(); /* the arm before the look at tx.head */
        if (put == want)
            return put;
        if (jr_chan_app_tx_room(a) > 0)
            continue; /* room came: the arm stays, the service drains after its next take */
        if (!jr_chan_blocks(io, &block))
            return put > 0 ? (ssize_t)put : -EAGAIN;
        rc = io->wait(io->ctx, POLLOUT);
        if (rc < 0)
            return put > 0 ? (ssize_t)put : rc;
    }
}

/* write(2) on a ring-mode connection from a buffer: jr_chan_write_from's contract. */
static inline ssize_t jr_chan_write(struct jr_chan_app *a, const struct jr_chan_io *io,
                                    const void *buf, size_t len, int block)
{
    return jr_chan_write_from(a, io, jr_chan_source_buf, (void *)buf, len, block);
}

/* shutdown(SHUT_WR): no byte after what tx holds; the bell makes the service look. */
static inline void jr_chan_shutdown_write(struct jr_chan_app *a, const struct jr_chan_io *io)
{
    JR_STORE(&a->shm->tx_eof, 1);
    JR_FENCE();
    io->bell(io->ctx);
}

#endif
