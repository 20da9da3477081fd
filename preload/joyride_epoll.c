/*
 * joyride_epoll.c - the arena's bell in the shim (issue 17; docs/channels.md, "Service
 * mode: the process's bell"), included by joyride_ring.c.
 *
 * In ring mode a read that empties a connection's rx arms it, and the service's next
 * put owes a token: one send by the service and one recv by the application per
 * request. The bell replaces those tokens for the descriptors of one epoll set per
 * process, the bell set (the first set a ring-mode descriptor of this process's arena
 * is added to): their reads arm the arena's bell instead (JR_RX_ARM_BELL), the service
 * pushes the slot on the bell's queue in shared memory, and writes a byte on the
 * arena's door only when this process sleeps in epoll_wait on that set. epoll_wait
 * turns the queue into events; the real descriptor stays in the kernel's set, so its
 * other events (EPOLLOUT, EPOLLRDHUP, a token's EPOLLIN) come from the kernel as
 * before and are merged with the bell's.
 *
 * The bell set's own readiness is kept exact only where the shim sees the wait:
 *  - a descriptor registered EPOLLONESHOT or EPOLLEXCLUSIVE, or watched by another
 *    set, or from another arena (a parent's), stays on tokens;
 *  - the set itself, once nested in another epoll, polled, selected, duplicated, or
 *    waited on by two threads at once, turns the bell off for good: every descriptor
 *    goes back to tokens (with a token asked for the bytes already there).
 * Level-triggered registrations stay on the ready list while rx has bytes;
 * edge-triggered ones leave it when reported and arm the bell again, so each arrival
 * after that is an event (as the kernel's edge triggers on each arrival).
 *
 * Locking: jr_lock (the shim's table lock, a spin lock) guards the set; no system call
 * is made under it.
 */

#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>

/* The data the door is registered with in the bell set: never reported to the caller. */
#define JR_DOOR_COOKIE 0x4a52424f4f524245ull /* "JRBOORBE" */

/* A ring-mode descriptor of this process's arena registered in the bell set. */
struct jr_bell_entry {
    struct jr_ring *r; /* NULL: no entry for this slot */
    int fd;
    uint32_t events;
    uint64_t data;
    uint8_t listed; /* in bs->ready (once: only the harvest takes it out) */
};

struct jr_bset {
    int epfd;
    struct jr_slots *slots;    /* the arena whose bell it serves */
    struct jr_arena_bell *bell; /* slot 0's */
    uint32_t lost_seen;
    int waiters;               /* threads inside epoll_wait on it */
    int off;                   /* the bell is off for good: tokens */
    uint32_t nready;
    uint32_t ready[JR_RING_SLOTS]; /* slots on the ready list, each once (listed) */
    struct jr_bell_entry by_slot[JR_RING_SLOTS];
};

static struct jr_bset *jr_bset;
/* A bell set's door was ever registered in this process (or its parent): its events are
 * taken out of every epoll_wait, even one the bell does not serve (a set shared with a
 * parent, a window while the bell turns off). */
static int jr_door_seen;
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*real_epoll_wait)(int, struct epoll_event *, int, int);
static int (*real_epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
static int (*real_epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *,
                                const sigset_t *);
static int (*real_poll)(struct pollfd *, nfds_t, int);
static int (*real_ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
static int (*real_select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
static int (*real_pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
                           const sigset_t *);

static void jr_epoll_resolve(void)
{
    RESOLVE(epoll_ctl);
    RESOLVE(epoll_wait);
    RESOLVE(epoll_pwait);
    RESOLVE(epoll_pwait2);
    RESOLVE(poll);
    RESOLVE(ppoll);
    RESOLVE(select);
    RESOLVE(pselect);
}

/* The bell set in use (NULL: none, or turned off). */
static struct jr_bset *jr_bset_live(void)
{
    struct jr_bset *bs = __atomic_load_n(&jr_bset, __ATOMIC_ACQUIRE);
    return bs != NULL && !__atomic_load_n(&bs->off, __ATOMIC_RELAXED) ? bs : NULL;
}

/* Whether r's reads arm the bell. */
static int jr_ring_bell(const struct jr_ring *r)
{
    return __atomic_load_n(&r->arm, __ATOMIC_ACQUIRE) == JR_RX_ARM_BELL;
}

static int jr_ring_on(const struct jr_ring *r)
{
    return __atomic_load_n(&r->mode, __ATOMIC_ACQUIRE) == JR_RING_ON; /* then view is set */
}

/* Whether r's rx has bytes for a reader (not counting the EOF: the kernel reports it,
 * as the service shuts its end down after rx_eof). */
static int jr_bell_has_bytes(struct jr_ring *r)
{
    return jr_ring_on(r) && !r->rd_shut && jr_chan_app_rx_avail(&r->view) > 0;
}

/* Put slot on the ready list (lock held): each slot is listed once at most, so the list
 * never holds more than JR_RING_SLOTS. */
static void jr_bell_mark_slot(struct jr_bset *bs, uint32_t slot)
{
    struct jr_bell_entry *e = &bs->by_slot[slot];
    if (e->r == NULL || e->listed)
        return;
    e->listed = 1;
    bs->ready[bs->nready++] = slot;
}

/* A ring whose claim may have no verdict yet is waited on through the kernel, or leaves
 * the bell: its channel is, or was, born with a token arm (chan.h's jr_chan_birth_token).
 * 1 when it was born for the bell and rx holds bytes that arm announced only to the bell:
 * the caller asks a token for them (jr_bell_retoken). No system call. */
static int jr_ring_birth_token(struct jr_ring *r)
{
    if (__atomic_load_n(&r->mode, __ATOMIC_ACQUIRE) == JR_RING_STREAM)
        return 0; /* refused: no channel, and the slot may be another claim's by now */
    if (!jr_chan_birth_token(jr_arena_app_chan(r->arena, r->slot)))
        return 0; /* fenced when 1: before the look at the verdict and rx */
    return jr_ring_settle_quiet(r) == JR_RING_ON && jr_chan_app_rx_avail(&r->view) > 0;
}

/* A wait through the kernel for r's bytes is about to begin (poll, select, an epoll set
 * that is not the bell's): a token armed for it, unless one is (a token arm the service
 * took has sent its token, which the wait sees). Not a soft one (chan.h's
 * JR_RX_ARM_TOKEN_SOFT), which the descriptor's return to the bell set withdraws.
 * Bytes already in rx are announced already: by a token, or, for a ring of the bell,
 * by the caller's look at it. */
static void jr_ring_arm_token(struct jr_ring *r)
{
    if (jr_ring_on(r) && !(JR_LOAD(&r->view.shm->rx_armed) & JR_RX_ARM_TOKEN))
        jr_chan_app_arm(&r->view, JR_RX_ARM_TOKEN);
}

/* Back to tokens: r's reads arm a token again, and rx is armed for token (JR_RX_ARM_TOKEN
 * or, for a descriptor no wait watches yet, JR_RX_ARM_TOKEN_SOFT). Stored, fenced, then
 * the token armed and rx looked at: a read that armed the bell meanwhile sees the change
 * after its own fence (chan.h's io->arm), or this look sees its bytes. 1 when rx holds
 * bytes the caller must ask a token for (jr_bell_retoken, after the lock: a system
 * call). A ring that is not the bell's has its reads' token arms; a real one is armed
 * for it too (jr_ring_arm_token) unless token is the soft kind. */
static int jr_bell_release_ring(struct jr_ring *r, uint32_t token)
{
    if (!jr_ring_bell(r)) {
        if (token == JR_RX_ARM_TOKEN)
            jr_ring_arm_token(r);
        return 0;
    }
    __atomic_store_n(&r->arm, 0, __ATOMIC_RELEASE);
    JR_FENCE(); /* the kind before the arm and the look */
    if (!jr_ring_on(r))
        return jr_ring_birth_token(r); /* not yet ring mode: born token-armed now */
    jr_chan_app_arm(&r->view, token);
    return jr_chan_app_rx_avail(&r->view) > 0;
}

/* Ask the service for a token for bytes rx already holds (chan.h's re-token). */
static void jr_bell_retoken(int fd, struct jr_ring *r)
{
    if (jr_ring_settle_quiet(r) != JR_RING_ON)
        return; /* no channel: nothing to ask (jr_ring_birth_token saw its verdict) */
    struct jr_ring_io ctx = {fd, r};
    struct jr_chan_io io = jr_io_of(&ctx);
    io.unseen = NULL;
    jr_chan_app_retoken(&r->view, &io);
}

/* Drop slot's entry (lock held), its ring armed for token (jr_bell_release_ring): 1 when
 * the caller must ask for a token for it. */
static int jr_bell_drop(struct jr_bset *bs, uint32_t slot, uint32_t token)
{
    struct jr_bell_entry *e = &bs->by_slot[slot];
    struct jr_ring *r = e->r;
    if (r == NULL)
        return 0;
    e->r = NULL; /* still listed: the harvest skips it (and unlists it) */
    return jr_bell_release_ring(r, token);
}

/* Turn the bell off for good: every entry back to tokens (and the door out of the set,
 * if it is still open). Not under the lock. */
static void jr_bset_off(struct jr_bset *bs, int set_open)
{
    int fds[JR_RING_SLOTS];
    struct jr_ring *rings[JR_RING_SLOTS];
    int n = 0;
    jr_lock();
    if (bs->off) {
        jr_unlock();
        return;
    }
    __atomic_store_n(&bs->off, 1, __ATOMIC_RELAXED);
    for (uint32_t k = 0; k < JR_RING_SLOTS; k++) {
        int fd = bs->by_slot[k].fd;
        struct jr_ring *r = bs->by_slot[k].r;
        if (jr_bell_drop(bs, k, JR_RX_ARM_TOKEN)) {
            fds[n] = fd;
            rings[n++] = r;
        }
    }
    for (uint32_t k = 0; k < JR_RING_SLOTS; k++)
        bs->by_slot[k].listed = 0;
    bs->nready = 0;
    jr_unlock();
    for (int i = 0; i < n; i++)
        jr_bell_retoken(fds[i], rings[i]);
    if (set_open && bs->slots->arena.door >= 0)
        real_epoll_ctl(bs->epfd, EPOLL_CTL_DEL, bs->slots->arena.door, NULL);
}

/* The set's readiness leaves the shim's sight (nested, polled, duplicated): off. */
static void jr_bset_exported(int epfd)
{
    struct jr_bset *bs = jr_bset_live();
    if (bs != NULL && bs->epfd == epfd && !jr_vfork_child()) /* else its parent's set */
        jr_bset_off(bs, 1);
}

/* fd is closed (or replaced by dup2): if it was the bell set, the bell is off, and the
 * door is not taken out of a set the number may now name. */
static void jr_bset_closed(int fd)
{
    struct jr_bset *bs = jr_bset_live();
    if (bs != NULL && bs->epfd == fd && !jr_vfork_child()) /* else its parent's set */
        jr_bset_off(bs, 0);
}

/* A new bell set: epfd, for this process's arena, with its door watched. NULL: none
 * (no door, or the door could not be added: tokens, as before). Lock not held. */
static struct jr_bset *jr_bset_make(int epfd)
{
    struct jr_slots *s = jr_slots;
    if (s == NULL || s->arena.door < 0 || s->pid != getpid()) /* getpid: a system call */
        return NULL;
    struct jr_bset *bs = calloc(1, sizeof *bs);
    if (bs == NULL)
        return NULL;
    bs->epfd = epfd;
    bs->slots = s;
    bs->bell = &jr_arena_app_chan(&s->arena, 0)->arena_bell;
    bs->lost_seen = JR_LOAD(&bs->bell->lost);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = JR_DOOR_COOKIE};
    __atomic_store_n(&jr_door_seen, 1, __ATOMIC_RELAXED);
    if (real_epoll_ctl(epfd, EPOLL_CTL_ADD, s->arena.door, &ev) != 0) {
        free(bs);
        return NULL;
    }
    jr_lock();
    if (jr_bset != NULL) { /* another thread made one first: the caller uses it */
        jr_unlock();
        real_epoll_ctl(epfd, EPOLL_CTL_DEL, s->arena.door, NULL);
        free(bs);
        return jr_bset_live();
    }
    __atomic_store_n(&jr_bset, bs, __ATOMIC_RELEASE);
    jr_unlock();
    return bs;
}

/* Whether a registration waits for bytes. */
static int jr_reads(uint32_t events) { return (events & (EPOLLIN | EPOLLRDNORM)) != 0; }

/* Whether a registration may use the bell: it waits for bytes, and neither one-shot nor
 * exclusive (whose reports the kernel must make itself). */
static int jr_bell_fits(uint32_t events)
{
    return jr_reads(events) && !(events & (EPOLLONESHOT | EPOLLEXCLUSIVE));
}

/* epoll_ctl succeeded on a ring-mode descriptor: keep the bell set's entries true. A
 * registration that waits for bytes and is not the bell's gets a real token arm
 * (chan.h's JR_RX_ARM_TOKEN_SOFT: a wait the shim sees arms its own). */
static void jr_bell_ctl(int epfd, int op, int fd, struct jr_ring *r, const struct epoll_event *ev)
{
    int reads = op != EPOLL_CTL_DEL && ev != NULL && jr_reads(ev->events);
    struct jr_bset *bs = jr_bset_live();
    if (bs == NULL && op == EPOLL_CTL_ADD && __atomic_load_n(&jr_bset, __ATOMIC_ACQUIRE) == NULL)
        bs = jr_bset_make(epfd); /* or the set another thread made meanwhile */
    if (bs == NULL) {
        if (reads)
            jr_ring_arm_token(r); /* no bell (off, or a fork child's): the kernel's wait */
        return;
    }
    int retoken = 0, belled = 0;
    jr_lock();
    int ours = r->arena == &bs->slots->arena && r->slot < JR_RING_SLOTS;
    struct jr_bell_entry *e = ours ? &bs->by_slot[r->slot] : NULL;
    if (bs->off) {
        /* Turned off since the look above (jr_bset_off, which re-tokened its entries):
         * no entry goes into a dead set. */
    } else if (epfd != bs->epfd || !ours) {
        /* Watched by another set too, or a parent's connection: tokens, for good. */
        if (op != EPOLL_CTL_DEL) {
            r->foreign = 1;
            if (e != NULL && e->r == r)
                retoken |= jr_bell_drop(bs, r->slot, JR_RX_ARM_TOKEN);
            retoken |= jr_bell_release_ring(r, JR_RX_ARM_TOKEN);
        }
    } else if (r->foreign) {
        /* the kernel's reports only (a real token armed below for a wait for bytes, and
         * by every read) */
    } else if (op == EPOLL_CTL_DEL) {
        /* No wait watches it now: a soft token, which a return to the set withdraws. */
        if (e->r == r && e->fd == fd)
            retoken = jr_bell_drop(bs, r->slot, JR_RX_ARM_TOKEN_SOFT);
    } else if (op == EPOLL_CTL_ADD && e->r != NULL) {
        /* The connection twice in one set (a dup): the kernel's reports only. */
        r->foreign = 1;
        retoken = jr_bell_drop(bs, r->slot, JR_RX_ARM_TOKEN) |
                  jr_bell_release_ring(r, JR_RX_ARM_TOKEN);
    } else if (ev != NULL && (op == EPOLL_CTL_ADD || e->r == NULL || (e->r == r && e->fd == fd))) {
        /* An ADD, a MOD of the entry, or a MOD of a descriptor whose entry went at an
         * earlier MOD (for EPOLLOUT alone, say: libuv's loops switch so). */
        *e = (struct jr_bell_entry){.r = r, .fd = fd, .events = ev->events,
                                    .data = ev->data.u64, .listed = e->listed};
        if (jr_bell_fits(ev->events)) {
            belled = 1;
            __atomic_store_n(&r->arm, JR_RX_ARM_BELL, __ATOMIC_RELEASE);
            /* Back in the set: a soft token armed when it left is withdrawn. Not while a
             * thread sleeps in the set's wait, which would not see the mark below: the
             * token wakes it, as when it left (a thread that enters the wait after this
             * look harvests under the lock, after the mark). */
            if (jr_ring_on(r) && __atomic_load_n(&bs->waiters, __ATOMIC_SEQ_CST) == 0 &&
                (JR_LOAD(&r->view.shm->rx_armed) & JR_RX_ARM_TOKEN_SOFT))
                __atomic_fetch_and(&r->view.shm->rx_armed, ~JR_RX_ARM_TOKEN_SOFT,
                                   __ATOMIC_SEQ_CST);
            /* A claim with no verdict yet: the channel may be born armed for the bell,
             * which saves a new connection its first token and that token's drain.
             * (refs: not a ring another thread closed meanwhile, whose slot may be a
             * new claim's; a wait through the kernel pinned a token's first.) */
            if (r->refs > 0 && __atomic_load_n(&r->mode, __ATOMIC_ACQUIRE) == JR_RING_PENDING)
                jr_chan_birth_ask(jr_arena_app_chan(r->arena, r->slot));
            jr_bell_mark_slot(bs, r->slot); /* looked at (and armed) by the next wait */
        } else {
            /* One-shot, exclusive or no read interest: the kernel reports it. A wait for
             * bytes gets a real token (below); one for room only, none: a soft one. */
            retoken = jr_bell_drop(bs, r->slot, reads ? JR_RX_ARM_TOKEN : JR_RX_ARM_TOKEN_SOFT);
        }
    }
    jr_unlock();
    if (reads && !belled)
        jr_ring_arm_token(r); /* what the kernel reports needs a token (idempotent) */
    if (retoken)
        jr_bell_retoken(fd, r);
}

/* chan.h's unseen step: a read left bytes no arm announces; the ring's entry goes on
 * the ready list. 0 when it did, -1 when the ring is not the bell's (a token then). */
static int jr_bell_unseen(struct jr_ring *r)
{
    struct jr_bset *bs = jr_bset_live();
    int rc = -1;
    if (bs == NULL || !jr_ring_bell(r))
        return -1;
    jr_lock();
    if (jr_ring_bell(r) && r->slot < JR_RING_SLOTS && bs->by_slot[r->slot].r == r &&
        __atomic_load_n(&bs->waiters, __ATOMIC_RELAXED) == 0) {
        jr_bell_mark_slot(bs, r->slot);
        rc = 0;
    }
    jr_unlock();
    return rc; /* a thread asleep in the set would not see the mark: a token wakes it */
}

/* A ring-mode descriptor closes: its entry goes. The kernel drops the registration
 * when the socket's last descriptor closes; while a dup keeps it open the kernel's
 * registration goes on, so the ring goes back to tokens (asked for bytes already there). */
static void jr_bell_forget(int fd, struct jr_ring *r)
{
    struct jr_bset *bs = __atomic_load_n(&jr_bset, __ATOMIC_ACQUIRE);
    int retoken = 0;
    if (bs == NULL || r->slot >= JR_RING_SLOTS)
        return;
    jr_lock();
    struct jr_bell_entry *e = &bs->by_slot[r->slot];
    if (e->r == r && e->fd == fd)
        retoken = jr_bell_drop(bs, r->slot, JR_RX_ARM_TOKEN) && r->refs > 1;
    jr_unlock();
    if (retoken)
        jr_bell_retoken(fd, r); /* fd is still open: close calls this first */
}

/* The bell's queue onto the ready list, then the ready list into events (lock held).
 * Level-triggered entries stay while rx has bytes; an entry whose rx is empty leaves,
 * armed (and looked at again after the arm); an edge-triggered one leaves once
 * reported, armed so that the next arrival is pushed. Entries that found no room wait
 * at the list's front, those reported go to its back: as Linux's ready list turns, no
 * ring starves another. Returns the events written. */
static int jr_bell_harvest(struct jr_bset *bs, struct epoll_event *evs, int max)
{
    uint32_t ids[64], got, taken = 0;
    /* At most a queue's worth per look: the rest stays for the next. */
    while (taken < JR_ARENA_BELL_CAP && (got = jr_arena_bell_take(bs->bell, ids, 64)) > 0) {
        taken += got;
        for (uint32_t i = 0; i < got; i++)
            if (ids[i] < JR_RING_SLOTS)
                jr_bell_mark_slot(bs, ids[i]);
    }
    uint32_t lost = JR_LOAD(&bs->bell->lost);
    if (lost != bs->lost_seen) { /* pushes the queue had no room for: look at all */
        bs->lost_seen = lost;
        for (uint32_t k = 0; k < JR_RING_SLOTS; k++)
            jr_bell_mark_slot(bs, k);
    }
    static __thread uint32_t reported[JR_RING_SLOTS];
    uint32_t kept = 0, nrep = 0;
    int n = 0;
    for (uint32_t i = 0; i < bs->nready; i++) {
        uint32_t slot = bs->ready[i];
        struct jr_bell_entry *e = &bs->by_slot[slot];
        struct jr_ring *r = e->r;
        if (r == NULL) { /* dropped since it was listed */
            e->listed = 0;
            continue;
        }
        if (n >= max) { /* no room in this call: first in the next */
            bs->ready[kept++] = slot;
            continue;
        }
        if (!jr_ring_on(r))
            jr_ring_settle_quiet(r); /* a bell birth: its first bytes' push brought it */
        int bytes = jr_bell_has_bytes(r);
        if (!bytes && jr_ring_on(r)) {
            jr_chan_app_arm(&r->view, JR_RX_ARM_BELL);
            bytes = jr_bell_has_bytes(r);
        }
        if (!bytes) { /* armed (or not yet ring mode: its birth arm announces it) */
            e->listed = 0;
            continue;
        }
        evs[n++] = (struct epoll_event){.events = e->events & (EPOLLIN | EPOLLRDNORM),
                                        .data.u64 = e->data};
        if (e->events & EPOLLET) {
            e->listed = 0;
            jr_chan_app_arm(&r->view, JR_RX_ARM_BELL);
            continue;
        }
        reported[nrep++] = slot;
    }
    memcpy(bs->ready + kept, reported, nrep * sizeof *reported);
    bs->nready = kept + nrep;
    return n;
}

/* Append k events (more) to the n in evs, merging one whose data an event already there
 * has (one event per descriptor, as the kernel gives) and taking the door's out (*door
 * set, the door drained). Returns the events now in evs. more may be evs + n. */
static int jr_events_merge(struct jr_bset *bs, struct epoll_event *evs, int n,
                           const struct epoll_event *more, int k, int *door)
{
    int out = n, rang = 0;
    for (int j = 0; j < k; j++) {
        struct epoll_event ev = more[j];
        if (ev.data.u64 == JR_DOOR_COOKIE) {
            rang = 1;
            continue;
        }
        int merged = 0;
        for (int i = 0; i < n && !merged; i++)
            if (evs[i].data.u64 == ev.data.u64) {
                evs[i].events |= ev.events;
                merged = 1;
            }
        if (!merged)
            evs[out++] = ev;
    }
    if (rang) {
        char junk[64];
        while (real_recvfrom(bs->slots->arena.door, junk, sizeof junk, MSG_DONTWAIT, NULL,
                             NULL) > 0)
            ;
        *door = 1;
    }
    return out;
}

static long jr_ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000L + (now.tv_nsec - t0->tv_nsec) / 1000000L;
}

/* jr_bell_harvest under the lock (none once the bell is off). */
static int jr_bell_take_events(struct jr_bset *bs, struct epoll_event *evs, int max)
{
    jr_lock();
    int n = bs->off || max <= 0 ? 0 : jr_bell_harvest(bs, evs, max);
    jr_unlock();
    return n;
}

/* epoll_wait/epoll_pwait on the bell set. */
static int jr_bell_wait(struct jr_bset *bs, struct epoll_event *evs, int max, int timeout,
                        const sigset_t *mask)
{
    struct timespec t0;
    if (timeout > 0)
        clock_gettime(CLOCK_MONOTONIC, &t0);
    /* Keep one place for the kernel's events, so a busy ready list cannot starve them. */
    int room = max > 1 ? max - 1 : max;
    for (;;) {
        int n = jr_bell_take_events(bs, evs, room);
        int wait = 0;
        if (n == 0 && timeout != 0) {
            /* About to sleep: arm the bell, look again (jr_slotq_arm's pair). */
            jr_lock();
            int again = !bs->off && jr_arena_bell_arm(bs->bell, bs->lost_seen);
            jr_unlock();
            if (again)
                continue;
            wait = timeout;
            if (timeout > 0 && (wait = timeout - (int)jr_ms_since(&t0)) < 0)
                wait = 0;
        }
        if (n == max) /* maxevents 1, and the bell had one */
            return n;
        int k = mask ? real_epoll_pwait(bs->epfd, evs + n, max - n, wait, mask)
                     : real_epoll_wait(bs->epfd, evs + n, max - n, wait);
        /* Awake: a push need not write the door (a stale arm costs one spurious wake). */
        __atomic_store_n(&bs->bell->armed, 0, __ATOMIC_RELAXED);
        if (k < 0)
            return n > 0 ? n : -1;
        int door = 0;
        int total = jr_events_merge(bs, evs, n, evs + n, k, &door);
        if (door && n == 0 && total < max) {
            /* The bell rang while we slept: its pushes, now. */
            struct epoll_event more[64];
            int want = max - total < 64 ? max - total : 64;
            int m = jr_bell_take_events(bs, more, want);
            total = jr_events_merge(bs, evs, total, more, m, &door);
        }
        if (total > 0 || wait == 0)
            return total;
        if (!door) /* the time ran out */
            return 0;
        /* Only the door, and nothing to report (a push for bytes already read): again. */
    }
}

/* ------------------------------------------------------------ the intercepted calls */

/* The latest registration (ADD or MOD) of each descriptor in one of the application's
 * epoll sets. connect() puts the service's connection where a kernel socket was (dup3),
 * which drops the kernel's registration of the old file, and an application may
 * register a socket before it connects it (nginx's upstream sockets:
 * ngx_event_connect_peer adds, then connects): connect makes it again (jr_epoll_carry).
 * One set per descriptor is remembered; a stale entry is caught by asking the kernel. */
struct jr_epmemo {
    int epfd_plus1; /* 0: none */
    uint32_t events;
    uint64_t data;
};
static struct jr_epmemo *jr_epmemo; /* JR_MAX_FD entries, made at the first ADD */

static void jr_epoll_remember(int epfd, int op, int fd, const struct epoll_event *ev)
{
    if (fd < 0 || fd >= JR_MAX_FD)
        return;
    struct jr_epmemo *m = __atomic_load_n(&jr_epmemo, __ATOMIC_ACQUIRE);
    if (op == EPOLL_CTL_DEL) {
        if (m != NULL && m[fd].epfd_plus1 == epfd + 1)
            m[fd].epfd_plus1 = 0;
        return;
    }
    if (ev == NULL)
        return;
    if (m == NULL) {
        struct jr_epmemo *made = calloc(JR_MAX_FD, sizeof *made), *none = NULL;
        if (made == NULL)
            return;
        if (!__atomic_compare_exchange_n(&jr_epmemo, &none, made, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            free(made); /* another thread's won */
        m = __atomic_load_n(&jr_epmemo, __ATOMIC_ACQUIRE);
    }
    m[fd] = (struct jr_epmemo){epfd + 1, ev->events, ev->data.u64};
}

/* Before fd's file is replaced: its remembered registration, if the kernel still has it
 * (a MOD to the same events succeeds; EPOLLEXCLUSIVE ones refuse MOD with EINVAL, and
 * ENOENT is a stale entry: the set or the descriptor was closed since). */
static struct jr_epmemo jr_epoll_registered(int fd)
{
    struct jr_epmemo none = {0, 0, 0};
    struct jr_epmemo *m = __atomic_load_n(&jr_epmemo, __ATOMIC_ACQUIRE);
    if (m == NULL || fd < 0 || fd >= JR_MAX_FD || m[fd].epfd_plus1 == 0)
        return none;
    struct jr_epmemo reg = m[fd];
    struct epoll_event ev = {.events = reg.events, .data.u64 = reg.data};
    RESOLVE(epoll_ctl);
    if (real_epoll_ctl(reg.epfd_plus1 - 1, EPOLL_CTL_MOD, fd, &ev) == 0 ||
        (errno == EINVAL && (reg.events & EPOLLEXCLUSIVE)))
        return reg;
    return none;
}

/* After fd's file was replaced: the registration made again on the new one, through
 * epoll_ctl below (a ring-mode descriptor joins the bell set as any other). */
static void jr_epoll_carry(int fd, struct jr_epmemo reg)
{
    if (reg.epfd_plus1 == 0)
        return;
    struct epoll_event ev = {.events = reg.events, .data.u64 = reg.data};
    int saved = errno;
    epoll_ctl(reg.epfd_plus1 - 1, EPOLL_CTL_ADD, fd, &ev);
    errno = saved;
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    RESOLVE(epoll_ctl);
    int rc = real_epoll_ctl(epfd, op, fd, ev);
    if (rc != 0)
        return rc;
    jr_epoll_remember(epfd, op, fd, ev);
    if (op == EPOLL_CTL_ADD)
        jr_bset_exported(fd); /* the bell set nested in another: its readiness is unseen */
    struct jr_ring *r = jr_ring_of(fd);
    if (r != NULL)
        jr_bell_ctl(epfd, op, fd, r, ev);
    return 0;
}

int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout)
{
    return epoll_pwait(epfd, evs, max, timeout, NULL);
}

/* The kernel's k events of a wait the bell does not serve, without the door's (a set
 * shared with a parent, or one the bell is turning off, may still hold the door). */
static int jr_without_door(struct epoll_event *evs, int k)
{
    if (k <= 0 || !__atomic_load_n(&jr_door_seen, __ATOMIC_RELAXED))
        return k;
    int out = 0;
    for (int j = 0; j < k; j++)
        if (evs[j].data.u64 != JR_DOOR_COOKIE)
            evs[out++] = evs[j];
    return out;
}

static int jr_plain_wait(int epfd, struct epoll_event *evs, int max, int timeout,
                         const sigset_t *mask)
{
    return jr_without_door(evs, mask ? real_epoll_pwait(epfd, evs, max, timeout, mask)
                                     : real_epoll_wait(epfd, evs, max, timeout));
}

int epoll_pwait(int epfd, struct epoll_event *evs, int max, int timeout, const sigset_t *mask)
{
    RESOLVE(epoll_wait);
    RESOLVE(epoll_pwait);
    struct jr_bset *bs = jr_bset_live();
    if (bs == NULL || bs->epfd != epfd || max <= 0)
        return jr_plain_wait(epfd, evs, max, timeout, mask);
    if (__atomic_add_fetch(&bs->waiters, 1, __ATOMIC_SEQ_CST) > 1) {
        /* Two threads wait on the set: one could sleep on work the other moved onto the
         * ready list. The kernel's tokens wake each as Linux would. */
        __atomic_sub_fetch(&bs->waiters, 1, __ATOMIC_SEQ_CST);
        jr_bset_off(bs, 1);
        return jr_plain_wait(epfd, evs, max, timeout, mask);
    }
    int saved, rc = jr_bell_wait(bs, evs, max, timeout, mask);
    saved = errno;
    __atomic_sub_fetch(&bs->waiters, 1, __ATOMIC_SEQ_CST);
    errno = saved;
    return rc;
}

/* epoll_pwait2: the bell set's waits in milliseconds (rounded up, as the kernel's
 * timeouts are not early); any other set's as the caller asked. */
int epoll_pwait2(int epfd, struct epoll_event *evs, int max, const struct timespec *t,
                 const sigset_t *mask)
{
    RESOLVE(epoll_pwait2);
    struct jr_bset *bs = jr_bset_live();
    if (bs == NULL || bs->epfd != epfd || max <= 0) {
        if (real_epoll_pwait2 == NULL) {
            errno = ENOSYS;
            return -1;
        }
        return jr_without_door(evs, real_epoll_pwait2(epfd, evs, max, t, mask));
    }
    long ms = -1;
    if (t != NULL) {
        if (t->tv_sec < 0 || t->tv_nsec < 0 || t->tv_nsec >= 1000000000L) {
            errno = EINVAL;
            return -1;
        }
        ms = t->tv_sec > INT_MAX / 1000 - 1 ? INT_MAX
                                             : t->tv_sec * 1000L + (t->tv_nsec + 999999) / 1000000;
    }
    return epoll_pwait(epfd, evs, max, (int)ms, mask);
}

/* poll, ppoll, select, pselect: a bell-armed ring has no token for bytes already in rx
 * (the wait's pin, jr_wait_pins_token, armed one for those to come): look at them; the
 * bell set itself among the descriptors turns the bell off. */
static void jr_bell_poll_look(int fd, int *ready)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r != NULL && jr_ring_bell(r) && jr_bell_has_bytes(r))
        *ready = 1;
}

/* A wait through the kernel on fd (poll, select, the blocking read's own poll): a ring
 * whose claim has no verdict yet is born with a token arm (jr_ring_birth_token), or,
 * born for the bell with bytes already there, asks a token for them; either way the
 * socket becomes readable. Whether or not the process has a bell set: the ask may come
 * from another thread's epoll_ctl after this wait began. A ring in ring mode gets a
 * real token arm (a bell's push, or a soft token another thread's epoll_ctl withdraws,
 * would not wake the wait); bytes already in rx are the bell's look's (below). */
static void jr_wait_pins_token(int fd)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r == NULL)
        return;
    if (__atomic_load_n(&r->mode, __ATOMIC_ACQUIRE) == JR_RING_PENDING) {
        if (jr_ring_birth_token(r))
            jr_bell_retoken(fd, r);
    } else {
        jr_ring_arm_token(r); /* a bell's, or a soft, arm wakes no poll */
    }
}

static void jr_wait_pins_poll(const struct pollfd *fds, nfds_t n)
{
    for (nfds_t i = 0; i < n; i++)
        if (fds[i].events & (POLLIN | POLLRDNORM))
            jr_wait_pins_token(fds[i].fd);
}

static void jr_wait_pins_select(int nfds, const fd_set *rd)
{
    for (int fd = 0; rd != NULL && fd < nfds && fd < FD_SETSIZE; fd++)
        if (FD_ISSET(fd, rd))
            jr_wait_pins_token(fd);
}

static int jr_real_poll(struct pollfd *fds, nfds_t n, int timeout)
{
    RESOLVE(poll);
    return real_poll(fds, n, timeout);
}

/* Before a poll (its pins armed the rings): whether some ring already has bytes (then
 * poll with 0). */
static int jr_bell_before_poll(const struct pollfd *fds, nfds_t n)
{
    int ready = 0;
    struct jr_bset *bs = jr_bset_live();
    if (bs == NULL)
        return 0;
    for (nfds_t i = 0; i < n; i++) {
        if (fds[i].fd == bs->epfd)
            jr_bset_off(bs, 1);
        else if (fds[i].events & (POLLIN | POLLRDNORM))
            jr_bell_poll_look(fds[i].fd, &ready);
    }
    return ready;
}

/* After it: the rings with bytes are readable. */
static int jr_bell_after_poll(struct pollfd *fds, nfds_t n, int rc)
{
    if (rc < 0)
        return rc;
    for (nfds_t i = 0; i < n; i++) {
        struct jr_ring *r = jr_ring_of(fds[i].fd);
        short want = fds[i].events & (POLLIN | POLLRDNORM);
        if (r == NULL || !jr_ring_bell(r) || !want || !jr_bell_has_bytes(r))
            continue;
        if (fds[i].revents == 0)
            rc++;
        fds[i].revents |= want;
    }
    return rc;
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    RESOLVE(poll);
    jr_wait_pins_poll(fds, n);
    if (jr_bset_live() == NULL)
        return real_poll(fds, n, timeout);
    int ready = jr_bell_before_poll(fds, n);
    return jr_bell_after_poll(fds, n, real_poll(fds, n, ready ? 0 : timeout));
}

/* The fortified poll (_FORTIFY_SOURCE with a fixed array): glibc's check, then ours. */
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        abort(); /* glibc's __chk_fail: a buffer overflow */
    return poll(fds, n, timeout);
}

int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask,
                size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        abort();
    return ppoll(fds, n, t, mask);
}

int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask)
{
    static const struct timespec zero = {0, 0};
    RESOLVE(ppoll);
    jr_wait_pins_poll(fds, n);
    if (jr_bset_live() == NULL)
        return real_ppoll(fds, n, t, mask);
    int ready = jr_bell_before_poll(fds, n);
    return jr_bell_after_poll(fds, n, real_ppoll(fds, n, ready ? &zero : t, mask));
}

/* Before select (its pins armed the rings asked about in rd): 1 when one has bytes. */
static int jr_bell_select_arm(int nfds, const fd_set *rd)
{
    int ready = 0;
    struct jr_bset *bs = jr_bset_live();
    if (bs == NULL || rd == NULL)
        return 0;
    for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++) {
        if (!FD_ISSET(fd, rd))
            continue;
        if (fd == bs->epfd)
            jr_bset_off(bs, 1);
        else
            jr_bell_poll_look(fd, &ready);
    }
    return ready;
}

/* After select: rd holds what the kernel found; add the rings with bytes that the
 * caller asked about (asked: its copy of rd before the call). */
static int jr_bell_select_after(int nfds, fd_set *rd, const fd_set *asked, int rc)
{
    if (rc < 0 || rd == NULL)
        return rc;
    for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++) {
        struct jr_ring *r = FD_ISSET(fd, asked) ? jr_ring_of(fd) : NULL;
        if (r == NULL || !jr_ring_bell(r) || FD_ISSET(fd, rd) || !jr_bell_has_bytes(r))
            continue;
        FD_SET(fd, rd);
        rc++;
    }
    return rc;
}

int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *t)
{
    RESOLVE(select);
    jr_wait_pins_select(nfds, rd);
    if (jr_bset_live() == NULL || rd == NULL)
        return real_select(nfds, rd, wr, ex, t);
    fd_set asked = *rd;
    struct timeval zero = {0, 0};
    int ready = jr_bell_select_arm(nfds, rd);
    return jr_bell_select_after(nfds, rd, &asked, real_select(nfds, rd, wr, ex, ready ? &zero : t));
}

int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *t,
            const sigset_t *mask)
{
    static const struct timespec zero = {0, 0};
    RESOLVE(pselect);
    jr_wait_pins_select(nfds, rd);
    if (jr_bset_live() == NULL || rd == NULL)
        return real_pselect(nfds, rd, wr, ex, t, mask);
    fd_set asked = *rd;
    int ready = jr_bell_select_arm(nfds, rd);
    return jr_bell_select_after(nfds, rd, &asked,
                                real_pselect(nfds, rd, wr, ex, ready ? &zero : t, mask));
}

/* fork: the child forgets the bell set (its parent's arena and loop); its copies of the
 * parent's rings go back to tokens in its memory. */
static void jr_bell_atfork_child(void)
{
    struct jr_bset *bs = jr_bset;
    if (bs == NULL)
        return;
    for (uint32_t k = 0; k < JR_RING_SLOTS; k++)
        if (bs->by_slot[k].r != NULL) {
            bs->by_slot[k].r->arm = 0;
            /* No verdict yet: born for the parent's bell set perhaps, while the child's
             * waits need tokens (bytes a put announced only to that bell are asked a
             * token for, as the parent's own poll would). */
            if (__atomic_load_n(&bs->by_slot[k].r->mode, __ATOMIC_RELAXED) == JR_RING_PENDING &&
                jr_ring_birth_token(bs->by_slot[k].r))
                jr_bell_retoken(bs->by_slot[k].fd, bs->by_slot[k].r);
        }
    jr_bset = NULL; /* the parent's memory: left, not freed (a copy the child never uses) */
}
