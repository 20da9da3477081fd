/*
 * chan_claim.h - how a connection enters ring mode: the application's arena, its
 * claim, and the service's verdict (issue 17; docs/channels.md, "Claiming ring mode").
 *
 * Why an arena. A memfd per connection costs about 15 us of CPU per connection here
 * (create, size, seal, map on both sides, first-touch faults, unmap): a quarter of a
 * whole short connection's CPU on this machine (joyride.bench.channel, its claim
 * rows). So each application process makes one sealed memfd, its arena, and carves it
 * into slots of one size; a connection claims a slot and sends the arena's descriptor
 * with the claim (SCM_RIGHTS, about 1.3 us). Holding the descriptor is the proof that
 * the application may have the service write there. The service maps each arena once
 * (it knows it by device and inode) and keeps it mapped while it has room to.
 *
 * The claim. The application's first bytes on the connection are one struct
 * jr_chan_claim, with the arena's descriptor attached. The service delivers nothing to
 * a new connection before the application's first bytes (a claim, or stream payload)
 * or a deadline (a process without the shim): a claim finds nothing sent yet, and both
 * rings start at index 0.
 *
 * The verdict is the slot's first word (chan.h): JR_CHAN_MAGIC (ring mode) or
 * JR_CHAN_REFUSED (stream mode), with claim_id, the claim's own number, so that what a
 * slot's last use left never answers a new claim. The service stores it before it
 * sends any byte on the socket. A claim it cannot answer in the slot (a file it must
 * not map: unsealed, not shmem, read-only; a slot off the grid or in use by another
 * channel: nothing may be written there) it refuses by simply going on in stream mode:
 * an application that finds bytes on its socket while its slot shows no verdict for its
 * claim knows the claim was refused. (No room for another arena is answered through a
 * mapping of the slot's page alone: jr_chan_svc_refuse_unmapped.)
 *
 * Trust. Nothing is read back from shared memory: the claim's fields are copied out of
 * the message; the arena's size and seals come from the kernel (fstat, F_GET_SEALS).
 * F_SEAL_SHRINK and F_SEAL_GROW must be set, or the application could truncate the file
 * under the service's mapping and kill it with SIGBUS. Every slot sits on its arena's
 * grid (the arena's first claim fixes the capacities), and a busy slot is refused, so
 * two channels never share memory.
 *
 * Locks. The caller serializes every call on one struct jr_arenas (the data plane's
 * workers share one behind a mutex: channels.c); an arena's wake-ups are the bell's
 * pushes, which run outside it, so a change of the door takes their lock too
 * (chan.h, struct jr_arena_wake).
 */
#ifndef JOYRIDE_CHAN_CLAIM_H
#define JOYRIDE_CHAN_CLAIM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <linux/memfd.h>

#include "chan.h"

#ifndef F_ADD_SEALS /* <fcntl.h> included before _GNU_SOURCE: the kernel's values */
#define F_ADD_SEALS (1024 + 9)
#define F_GET_SEALS (1024 + 10)
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#endif

#define JR_CLAIM_MAGIC 0x4d4c434au /* "JCLM" */
#define JR_CLAIM_VERSION 2u /* 2: JR_CLAIM_DOOR */
#define JR_ARENA_PAGE 4096u
#define JR_ARENA_MAX_BYTES (1ull << 30)
#define JR_CHAN_MAX_CAP (1u << 22) /* per direction */
#define JR_ARENA_SEALS (F_SEAL_SHRINK | F_SEAL_GROW)
#define JR_TMPFS_MAGIC 0x01021994 /* linux/magic.h: memfds live on shmem */

/* The claim: the connection's first bytes from the application, one message. */
struct jr_chan_claim {
    uint32_t magic, version;
    uint32_t claim_id;  /* the application's number for this claim (never 0) */
    uint32_t rx_cap, tx_cap;
    uint32_t flags;     /* JR_CLAIM_BELL, JR_CLAIM_DOOR, or 0 */
    uint64_t offset;    /* the slot's offset in the arena */
};

/* The claim's flags. JR_CLAIM_BELL: tell readiness through the process's bell (struct
 * jr_bell, chan.h), not tokens on the socket; granted only to the service's own
 * process (embedded mode), refused otherwise. The service rings the bell with the slot
 * once its verdict is stored, whatever it is, so an event loop learns it without
 * waiting. */
#define JR_CLAIM_BELL 1u
/* JR_CLAIM_DOOR: a second descriptor comes with the arena's, the arena's door (an
 * AF_UNIX datagram socket's end; the application keeps the other): a byte there says
 * "look at my channels armed in door mode" (chan.h, JR_ARMED_DOOR). Every claim sends
 * it; the service keeps the first it accepts for an arena, for as long as it maps the
 * arena, and watches it. */
#define JR_CLAIM_DOOR 2u


/* Bytes one slot takes for these capacities: a whole number of pages. */
static inline size_t jr_arena_slot_bytes(uint32_t rx_cap, uint32_t tx_cap)
{
    size_t need = jr_chan_size(rx_cap, tx_cap);
    if (need == 0 || rx_cap > JR_CHAN_MAX_CAP || tx_cap > JR_CHAN_MAX_CAP)
        return 0;
    return (need + JR_ARENA_PAGE - 1) & ~(size_t)(JR_ARENA_PAGE - 1);
}

/* The slot a claim names (the verdict's bell needs it before the arena is looked at). */
static inline uint64_t jr_claim_slot(const struct jr_chan_claim *cl)
{
    size_t bytes = jr_arena_slot_bytes(cl->rx_cap, cl->tx_cap);
    return bytes ? cl->offset / bytes : UINT64_MAX;
}

static inline int jr_futex(uint32_t *word, int op, uint32_t val, const struct timespec *t)
{
    return (int)syscall(SYS_futex, word, op, val, t, NULL, 0);
}

/* --- the service --------------------------------------------------------------------- */

/* One mapped arena. base == NULL: the entry is free. */
struct jr_arena {
    uint64_t dev, ino;
    uint8_t *base;
    size_t size;
    uint32_t rx_cap, tx_cap;
    uint32_t slot_bytes, slots;
    uint32_t live;   /* channels in it */
    uint64_t *busy;  /* a bit per slot */
    /* Its door (JR_CLAIM_DOOR; wake.door_fd, the service's to watch, -1: none) and its
     * bell's indices (chan.h, struct jr_arena_wake). */
    struct jr_arena_wake wake;
};

struct jr_arenas {
    struct jr_arena *a;
    uint32_t max;
    uint32_t mapped;
    struct jr_bell_counts bell_counts; /* every arena's bell, mapped now or before */
};

static inline int jr_arenas_init(struct jr_arenas *as, uint32_t max)
{
    *as = (struct jr_arenas){.a = calloc(max ? max : 1, sizeof(struct jr_arena)), .max = max};
    for (uint32_t i = 0; as->a != NULL && i < max; i++)
        as->a[i].wake.door_fd = as->a[i].wake.door_epfd = -1;
    return as->a ? 0 : -ENOMEM;
}

/* The arena's door goes: out of the epoll that watches it, then closed (the
 * application's copy stays open, so the close alone would leave it watched). */
static inline void jr_arena_drop_door(struct jr_arena *ar)
{
    struct jr_arena_wake *w = &ar->wake;
    jr_wake_lock(w); /* no push writes the door while it goes */
    if (w->door_fd >= 0) {
        JR_STORE(&w->bell->door_held, 0); /* claims bring it again */
        if (w->door_epfd >= 0)
            epoll_ctl(w->door_epfd, EPOLL_CTL_DEL, w->door_fd, NULL);
        close(w->door_fd);
        w->door_fd = w->door_epfd = -1;
    }
    jr_wake_unlock(w);
}

static inline void jr_arena_unmap(struct jr_arenas *as, struct jr_arena *ar)
{
    jr_arena_drop_door(ar); /* first: it writes door_held in the mapping */
    munmap(ar->base, ar->size);
    free(ar->busy);
    *ar = (struct jr_arena){.wake.door_fd = -1, .wake.door_epfd = -1};
    as->mapped--;
}

/* Unmap the arenas no channel uses (the service calls this now and then: an idle
 * arena's mapping is what keeps a departed application's memory alive), leaving any
 * whose door an epoll other than epfd watches (-1: whichever watches it): the plane
 * that watches a door is the one that closes it. How many went. */
static inline uint32_t jr_arenas_trim(struct jr_arenas *as, int epfd)
{
    uint32_t gone = 0;
    for (uint32_t i = 0; i < as->max; i++) {
        struct jr_arena *ar = &as->a[i];
        if (ar->base != NULL && ar->live == 0 &&
            (epfd < 0 || ar->wake.door_fd < 0 || ar->wake.door_epfd == epfd)) {
            jr_arena_unmap(as, ar);
            gone++;
        }
    }
    return gone;
}

/* At the service's end, every channel released or not. */
static inline void jr_arenas_free(struct jr_arenas *as)
{
    for (uint32_t i = 0; i < as->max; i++) {
        struct jr_arena *ar = &as->a[i];
        if (ar->base == NULL)
            continue;
        /* The service is going: every slot it held is the application's again. */
        for (uint32_t k = 0; k < ar->slots; k++)
            if (ar->busy[k / 64] & (1ull << (k % 64)))
                JR_STORE(&((struct jr_chan *)(ar->base + (size_t)k * ar->slot_bytes))->magic,
                         JR_CHAN_RELEASED);
        jr_arena_unmap(as, ar);
    }
    free(as->a);
    as->a = NULL;
}

/* Whether door may be an arena's door: an AF_UNIX datagram socket, which the service
 * reads with recv(MSG_DONTWAIT) whatever the application does to its flags. */
static inline int jr_door_valid(int door)
{
    struct stat st;
    int domain = 0, type = 0;
    socklen_t dl = sizeof domain, tl = sizeof type;
    return fstat(door, &st) == 0 && S_ISSOCK(st.st_mode) &&
           getsockopt(door, SOL_SOCKET, SO_DOMAIN, &domain, &dl) == 0 && domain == AF_UNIX &&
           getsockopt(door, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_DGRAM;
}

/* A claim on arena idx was accepted with door (or -1): the arena keeps the first valid
 * door it is given, watched in epfd with tag (epfd -1: not watched), and says so in
 * slot 0 (1: door is the arena's now); any other is closed (0), as is one that epoll
 * refuses. */
static inline int jr_arena_take_door(struct jr_arenas *as, int idx, int door, int epfd,
                                     uint64_t tag)
{
    if (door < 0)
        return 0;
    struct jr_arena *ar = idx >= 0 && (uint32_t)idx < as->max ? &as->a[idx] : NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (ar == NULL || ar->base == NULL || ar->wake.door_fd >= 0 || !jr_door_valid(door) ||
        (epfd >= 0 && epoll_ctl(epfd, EPOLL_CTL_ADD, door, &ev) != 0)) {
        close(door);
        return 0;
    }
    jr_wake_lock(&ar->wake);
    ar->wake.door_fd = door;
    ar->wake.door_epfd = epfd;
    jr_wake_unlock(&ar->wake);
    JR_STORE(&ar->wake.bell->door_held, 1);
    return 1;
}

/* The door word of arena idx (slot 0's arena_door) when it has a door that epfd
 * watches, else NULL: a channel arms in door mode only on the plane whose loop the door
 * wakes; on any other its arms stay on its socket. */
static inline uint32_t *jr_arena_door_word(const struct jr_arenas *as, int idx, int epfd)
{
    if (idx < 0 || (uint32_t)idx >= as->max || as->a[idx].base == NULL ||
        as->a[idx].wake.door_fd < 0 || as->a[idx].wake.door_epfd != epfd)
        return NULL;
    return &((struct jr_chan *)as->a[idx].base)->arena_door;
}

/* After a verdict is stored: wake an application thread that sleeps on it. The
 * store-buffering pattern with jr_chan_app_wait_verdict (verdict, fence, look at the
 * flag here; flag, fence, look at the verdict there). */
static inline void jr_chan_svc_verdict_wake(struct jr_chan *c)
{
    JR_FENCE();
    if (JR_XCHG(&c->claim_waiting, 0))
        jr_futex(&c->magic, FUTEX_WAKE, INT_MAX, NULL);
}

/* The arena fd names: found, mapped now, or -errno. *fresh: mapped by this call. */
static inline int jr_arena_of(struct jr_arenas *as, int fd, const struct jr_chan_claim *cl,
                              int *fresh)
{
    struct stat st;
    struct statfs fs;
    *fresh = 0;
    /* An arena already mapped was proven sealed, shmem and sized when it was mapped, and
     * none of that can change for its inode (seals are never taken off). What each
     * descriptor must prove again is that its sender may write there. */
    if (fstat(fd, &st) != 0)
        return -EPERM;
    for (uint32_t i = 0; i < as->max; i++) {
        struct jr_arena *ar = &as->a[i];
        if (ar->base != NULL && ar->dev == (uint64_t)st.st_dev &&
            ar->ino == (uint64_t)st.st_ino)
            return (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR ? (int)i : -EPERM;
    }
    /* Seals first: a size read before them proves nothing (the owner could shrink the
     * file between the look and the seal, then the service's touch is SIGBUS), so a new
     * arena's fstat comes again after them. */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & JR_ARENA_SEALS) != JR_ARENA_SEALS)
        return -EPERM; /* not a memfd, or one its owner could still resize */
    /* Plain shmem only: a hugetlbfs memfd can lose a page to a punched hole and fail
     * the service's next touch. Writable by its sender: the proof the mmap gives a new
     * arena must hold for one already mapped too. */
    if (fstatfs(fd, &fs) != 0 || fs.f_type != JR_TMPFS_MAGIC || fstat(fd, &st) != 0 ||
        !S_ISREG(st.st_mode) || (fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR)
        return -EPERM;
    if (st.st_size < (off_t)JR_ARENA_PAGE || (uint64_t)st.st_size > JR_ARENA_MAX_BYTES)
        return -EFBIG;
    int free_at = -1; /* not mapped (looked above): a free entry for it */
    for (uint32_t i = 0; i < as->max && free_at < 0; i++)
        if (as->a[i].base == NULL)
            free_at = (int)i;
    if (free_at < 0) { /* room: an idle arena goes first */
        for (uint32_t i = 0; i < as->max && free_at < 0; i++)
            if (as->a[i].live == 0) {
                jr_arena_unmap(as, &as->a[i]);
                free_at = (int)i;
            }
        if (free_at < 0)
            return -ENOSPC;
    }
    size_t slot_bytes = jr_arena_slot_bytes(cl->rx_cap, cl->tx_cap);
    size_t slots = slot_bytes ? (size_t)st.st_size / slot_bytes : 0;
    if (slots == 0)
        return -EINVAL;
    uint64_t *busy = calloc((slots + 63) / 64, sizeof(uint64_t));
    if (busy == NULL)
        return -ENOMEM;
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int err = -errno;
        free(busy);
        return err;
    }
    /* The bell's indices go on from what the memory holds (an arena mapped again after
     * a trim): a made-up value only makes this application's own pushes count as lost. */
    struct jr_arena_bell *bell = &((struct jr_chan *)base)->arena_bell;
    /* door_held is left as it is: set, another service (a second interface's) holds the
     * door, and a second producer on the bell's queue would lose its pushes; this one
     * then gets no door, and its bell arms are answered with tokens. (A service that died
     * holding it leaves it set too: tokens, until the application's next arena.) */
    as->a[free_at] = (struct jr_arena){
        .dev = (uint64_t)st.st_dev, .ino = (uint64_t)st.st_ino,
        .base = base, .size = (size_t)st.st_size,
        .rx_cap = cl->rx_cap, .tx_cap = cl->tx_cap,
        .slot_bytes = (uint32_t)slot_bytes, .slots = (uint32_t)slots, .busy = busy,
        .wake = {.bell = bell, .tail = JR_LOAD(&bell->tail), .lost = JR_LOAD(&bell->lost),
                 .door_fd = -1, .door_epfd = -1, .counts = &as->bell_counts},
    };
    as->mapped++;
    *fresh = 1;
    return free_at;
}

/* No room for another arena: answer the claim anyway (an application waiting for its
 * verdict before a write would wait for nothing), through a mapping made for the
 * answer alone. The arena is not in the table, so no channel of the service lives in
 * it and the slot, once on the claim's grid and inside the file, is free to write. */
static inline void jr_chan_svc_refuse_unmapped(int fd, const struct jr_chan_claim *cl)
{
    struct stat st;
    size_t slot_bytes = jr_arena_slot_bytes(cl->rx_cap, cl->tx_cap);
    if (slot_bytes == 0 || cl->offset % slot_bytes != 0 || fstat(fd, &st) != 0 ||
        cl->offset > (uint64_t)st.st_size || (uint64_t)st.st_size - cl->offset < slot_bytes)
        return; /* the checks jr_arena_of passed keep the size fixed: no SIGBUS */
    size_t page = cl->offset & ~(uint64_t)(JR_ARENA_PAGE - 1);
    void *map = mmap(NULL, JR_ARENA_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)page);
    if (map == MAP_FAILED)
        return;
    struct jr_chan *c = (struct jr_chan *)((uint8_t *)map + (cl->offset - page));
    c->claim_id = cl->claim_id;
    JR_STORE(&c->magic, JR_CHAN_REFUSED);
    jr_chan_svc_verdict_wake(c);
    munmap(map, JR_ARENA_PAGE);
}

/* A claim arrived: msg/len are the first bytes the application sent on the connection,
 * fd the descriptor that came with them (the caller closes it, whatever the verdict).
 * claimable: nothing has been sent on the connection yet (else the answer is stream
 * mode). bell: the process's bell when the claim comes from the service's own process
 * (a JR_CLAIM_BELL claim is refused without it), else NULL. 0: ring mode, *out is the service's view; -errno: stream mode, answered in the
 * slot when it could be (-EPROTO: not a claim; -EBADF: no arena; -EPERM: not sealed;
 * -EFBIG: size; -EINVAL: capacities or offset; -EBUSY: slot in use; -ENOSPC: no room
 * for another arena; -EALREADY: not claimable; else mmap's errno). */
static inline int jr_chan_svc_claim(struct jr_arenas *as, const void *msg, size_t len, int fd,
                                    int claimable, struct jr_bell *bell,
                                    struct jr_chan_svc *out)
{
    struct jr_chan_claim cl;
    if (len != sizeof cl)
        return -EPROTO;
    memcpy(&cl, msg, sizeof cl); /* private from here: the application cannot change it */
    if (cl.magic != JR_CLAIM_MAGIC || cl.version != JR_CLAIM_VERSION ||
        (cl.flags & ~(JR_CLAIM_BELL | JR_CLAIM_DOOR)) != 0 || cl.claim_id == 0)
        return -EPROTO;
    if ((cl.flags & JR_CLAIM_BELL) && bell == NULL)
        claimable = 0; /* not the service's process: refused, answered in the slot */
    if (fd < 0)
        return -EBADF;
    if (jr_arena_slot_bytes(cl.rx_cap, cl.tx_cap) == 0)
        return -EINVAL;
    int fresh;
    int idx = jr_arena_of(as, fd, &cl, &fresh);
    if (idx == -ENOSPC)
        jr_chan_svc_refuse_unmapped(fd, &cl);
    if (idx < 0)
        return idx;
    struct jr_arena *ar = &as->a[idx];
    int rc = 0;
    uint64_t slot = cl.offset / ar->slot_bytes;
    if (cl.rx_cap != ar->rx_cap || cl.tx_cap != ar->tx_cap || cl.offset % ar->slot_bytes != 0 ||
        slot >= ar->slots)
        rc = -EINVAL; /* off the arena's grid */
    else if (ar->busy[slot / 64] & (1ull << (slot % 64)))
        rc = -EBUSY; /* another channel's memory: not a byte written there */
    if (rc < 0) {
        if (fresh)
            jr_arena_unmap(as, ar);
        return rc;
    }
    struct jr_chan *c = (struct jr_chan *)(ar->base + cl.offset);
    if ((cl.flags & JR_CLAIM_BELL) && bell != NULL &&
        (ar->dev != bell->arena_dev || ar->ino != bell->arena_ino))
        claimable = 0; /* another arena than the bell's (a forked child's): refused */
    if (!claimable) {
        c->claim_id = cl.claim_id;
        JR_STORE(&c->magic, JR_CHAN_REFUSED);
        jr_chan_svc_verdict_wake(c);
        return -EALREADY; /* an idle arena stays mapped: jr_arenas_trim */
    }
    rc = jr_chan_create(out, c, ar->slot_bytes, cl.rx_cap, cl.tx_cap, cl.claim_id);
    if (rc < 0) /* cannot happen: the grid was checked against these capacities */
        return rc;
    ar->busy[slot / 64] |= 1ull << (slot % 64);
    ar->live++;
    out->arena = idx;
    out->slot = (uint32_t)slot;
    out->bell = (cl.flags & JR_CLAIM_BELL) ? bell : NULL;
    out->wake = &ar->wake; /* a bell arm needs its door too: jr_arena_bell_ring */
    jr_chan_svc_verdict_wake(c);
    return 0;
}

/* The connection is over for the service: the slot is the application's again. */
static inline void jr_chan_svc_release(struct jr_arenas *as, struct jr_chan_svc *s)
{
    if (s->shm != NULL && s->revert_fd >= 0) { /* a revert request never taken up */
        close(s->revert_fd);
        s->revert_fd = -1;
    }
    if (s->arena < 0 || (uint32_t)s->arena >= as->max)
        return;
    struct jr_arena *ar = &as->a[s->arena];
    /* The service's last touch of the slot. */
    JR_STORE(&s->shm->magic, s->reverted ? JR_CHAN_REVERT_DONE : JR_CHAN_RELEASED);
    ar->busy[s->slot / 64] &= ~(1ull << (s->slot % 64));
    ar->live--;
    s->shm = NULL;
    s->arena_door = NULL;
    s->wake = NULL;
    s->arena = -1;
}

/* --- the application ----------------------------------------------------------------- */

/* One process's arena: a sealed memfd, mapped. */
struct jr_arena_app {
    int fd;
    int door;       /* the door's application end (jr_arena_app_door), -1: none */
    int door_peer;  /* ... and the service's end, sent with each claim */
    uint8_t *base;
    size_t size;
    uint32_t rx_cap, tx_cap;
    uint32_t slot_bytes, slots;
};

/* Make an arena of slots slots. 0 or -errno. */
static inline int jr_arena_app_create(struct jr_arena_app *a, uint32_t slots, uint32_t rx_cap,
                                      uint32_t tx_cap)
{
    *a = (struct jr_arena_app){.fd = -1, .door = -1, .door_peer = -1};
    size_t slot_bytes = jr_arena_slot_bytes(rx_cap, tx_cap);
    if (slot_bytes == 0 || slots == 0 || (uint64_t)slots * slot_bytes > JR_ARENA_MAX_BYTES)
        return -EINVAL;
    size_t size = (size_t)slots * slot_bytes;
    int fd = (int)syscall(SYS_memfd_create, "joyride-channels", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    void *base = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) != 0 ||
        fcntl(fd, F_ADD_SEALS, JR_ARENA_SEALS | F_SEAL_SEAL) != 0 ||
        (base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
        int err = -errno;
        close(fd);
        return err;
    }
    *a = (struct jr_arena_app){.fd = fd, .door = -1, .door_peer = -1, .base = base,
                               .size = size, .rx_cap = rx_cap, .tx_cap = tx_cap,
                               .slot_bytes = (uint32_t)slot_bytes, .slots = slots};
    return 0;
}

/* Give the arena a door (JR_CLAIM_DOOR): its claims carry the service's end from now
 * on. 0 or -errno (the arena then goes on without one). */
static inline int jr_arena_app_door(struct jr_arena_app *a)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
    a->door = sv[0];
    a->door_peer = sv[1];
    return 0;
}

/* The application: make the service look at this arena's channels armed in door mode
 * (chan.h, JR_ARMED_DOOR). Only the first ring after the service armed the door writes:
 * 0 when it did not need to, 1 when it wrote (or found the socket full: its bytes wake
 * the service already), -errno when it took the word but could not write (its door was
 * closed under it, or the service dropped it): the caller then rings the connection's
 * socket, which the service watches for every flow it runs. */
static inline int jr_arena_app_ring_door(const struct jr_arena_app *a)
{
    struct jr_chan *c = (struct jr_chan *)a->base;
    if (a->door < 0 || !JR_XCHG(&c->arena_door, 0))
        return 0;
    char d = 'D';
    if (send(a->door, &d, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1 || errno == EAGAIN)
        return 1;
    return -errno;
}

/* Whether first bytes are a claim that says it brings a door (JR_CLAIM_DOOR): only then
 * is a second descriptor taken as the arena's door. */
static inline int jr_claim_has_door(const uint8_t *buf, size_t len)
{
    struct jr_chan_claim cl;
    if (len != sizeof cl)
        return 0;
    memcpy(&cl, buf, sizeof cl);
    return cl.magic == JR_CLAIM_MAGIC && (cl.flags & JR_CLAIM_DOOR) != 0;
}

static inline void jr_arena_app_destroy(struct jr_arena_app *a)
{
    if (a->base != NULL)
        munmap(a->base, a->size);
    if (a->fd >= 0)
        close(a->fd);
    if (a->door >= 0)
        close(a->door);
    if (a->door_peer >= 0)
        close(a->door_peer);
    *a = (struct jr_arena_app){.fd = -1, .door = -1, .door_peer = -1};
}

static inline struct jr_chan *jr_arena_app_chan(const struct jr_arena_app *a, uint32_t slot)
{
    return (struct jr_chan *)(a->base + (size_t)slot * a->slot_bytes);
}

/* Send the claim of slot for this connection, as its first bytes (flags: JR_CLAIM_BELL
 * or 0; JR_CLAIM_DOOR is added, with the door's descriptor, when the arena has a door).
 * 0 or -errno.
 * slot == a->slots (past the arena) makes a claim the service refuses at once: an
 * application with no free slot says so without making the delivery wait. */
static inline int jr_chan_app_claim(int sock, const struct jr_arena_app *a, uint32_t slot,
                                    uint32_t claim_id, uint32_t flags)
{
    int fds[2] = {a->fd, a->door_peer};
    /* The door goes with each claim until the service says it holds one. */
    int nfds = a->door_peer >= 0 &&
               !JR_LOAD(&((struct jr_chan *)a->base)->arena_bell.door_held) ? 2 : 1;
    if (nfds == 2)
        flags |= JR_CLAIM_DOOR;
    struct jr_chan_claim cl = {.magic = JR_CLAIM_MAGIC, .version = JR_CLAIM_VERSION,
                               .claim_id = claim_id, .rx_cap = a->rx_cap, .tx_cap = a->tx_cap,
                               .flags = flags, .offset = (uint64_t)slot * a->slot_bytes};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 2)];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = &cl, .iov_len = sizeof cl};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = ctl.buf, .msg_controllen = CMSG_SPACE(sizeof(int) * nfds)};
    /* The slot is the application's (free, or jr_chan_app_slot_done): its word starts
     * at 0, so a verdict is a change a futex waiter sees, never a value the slot held.
     * (slot == a->slots is a claim made to be refused: no slot, nothing to reset.) */
    if (slot < a->slots) {
        struct jr_chan *c = jr_arena_app_chan(a, slot);
        __atomic_store_n(&c->magic, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->birth_arm, 0, __ATOMIC_RELAXED); /* the last use's JR_BIRTH_BORN */
    }
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(h), fds, sizeof(int) * nfds);
    ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL);
    if (n < 0)
        return -errno;
    return n == (ssize_t)sizeof cl ? 0 : -EPROTO; /* a fresh socket takes 32 bytes whole */
}

/* The verdict on claim_id in slot: 1 ring mode (*out attached), 0 refused (stream
 * mode), -EAGAIN none yet (the caller then looks at its socket: bytes there with no
 * verdict mean a claim refused without an answer). */
static inline int jr_chan_app_verdict(const struct jr_arena_app *a, uint32_t slot,
                                      uint32_t claim_id, struct jr_chan_app *out)
{
    struct jr_chan *c = jr_arena_app_chan(a, slot);
    uint32_t magic = JR_LOAD(&c->magic);
    if ((magic != JR_CHAN_MAGIC && magic != JR_CHAN_REFUSED) ||
        __atomic_load_n(&c->claim_id, __ATOMIC_RELAXED) != claim_id)
        return -EAGAIN;
    if (magic == JR_CHAN_REFUSED)
        return 0;
    return jr_chan_attach(out, c, a->slot_bytes) == 0 ? 1 : 0;
}

/* Wait up to timeout_ms for the verdict (a write before it, say): as
 * jr_chan_app_verdict, -EAGAIN when the time ran out. */
static inline int jr_chan_app_wait_verdict(const struct jr_arena_app *a, uint32_t slot,
                                           uint32_t claim_id, struct jr_chan_app *out,
                                           int timeout_ms)
{
    struct jr_chan *c = jr_arena_app_chan(a, slot);
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += timeout_ms / 1000;
    end.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    for (;;) {
        int v = jr_chan_app_verdict(a, slot, claim_id, out);
        if (v != -EAGAIN)
            return v;
        __atomic_store_n(&c->claim_waiting, 1, __ATOMIC_RELAXED);
        JR_FENCE(); /* the flag before the look at the verdict */
        v = jr_chan_app_verdict(a, slot, claim_id, out);
        if (v != -EAGAIN)
            return v;
        clock_gettime(CLOCK_MONOTONIC, &now);
        struct timespec left = {end.tv_sec - now.tv_sec, end.tv_nsec - now.tv_nsec};
        if (left.tv_nsec < 0) {
            left.tv_sec--;
            left.tv_nsec += 1000000000L;
        }
        if (left.tv_sec < 0)
            return -EAGAIN;
        /* Sleeps only while the word is still 0 (jr_chan_app_claim): a verdict stored
         * since makes this return at once, and the loop looks again. */
        jr_futex(&c->magic, FUTEX_WAIT, 0, &left);
    }
}

/* After a revert request (chan.h, JR_CHAN_REVERT_BYTE) on fd, the old socket: wait
 * until the service switched to the new one (the magic leaves JR_CHAN_MAGIC). Before
 * that the new socket's peer has no name, so getpeername would not spell the
 * connection. It takes as long as tx's bytes take to fit the service's send buffer.
 * 0, or -EPIPE: the service's end hung up and no switch came within a second (the
 * service is gone, and the connection with it). */
static inline int jr_chan_app_wait_reverted(struct jr_chan *c, int fd)
{
    int hung = 0;
    for (;;) {
        __atomic_store_n(&c->claim_waiting, 1, __ATOMIC_RELAXED);
        JR_FENCE(); /* the flag before the look at the magic (jr_chan_svc_verdict_wake) */
        if (JR_LOAD(&c->magic) != JR_CHAN_MAGIC)
            return 0;
        struct timespec slice = {0, 100 * 1000000L};
        jr_futex(&c->magic, FUTEX_WAIT, JR_CHAN_MAGIC, &slice);
        if (JR_LOAD(&c->magic) != JR_CHAN_MAGIC)
            return 0;
        /* The system call itself: a shim's poll would take it for the application's. */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        struct timespec zero = {0, 0};
        if (syscall(SYS_ppoll, &p, 1, &zero, NULL, 0) > 0 && (p.revents & POLLHUP) &&
            ++hung > 10)
            return -EPIPE;
    }
}

/* Whether the service is done with the slot since claim_id: released, or refused
 * with an answer. An application reuses a slot only then. */
static inline int jr_chan_app_slot_done(const struct jr_arena_app *a, uint32_t slot,
                                        uint32_t claim_id)
{
    struct jr_chan *c = jr_arena_app_chan(a, slot);
    uint32_t magic = JR_LOAD(&c->magic);
    return (magic == JR_CHAN_RELEASED || magic == JR_CHAN_REVERT_DONE ||
            magic == JR_CHAN_REFUSED) &&
           __atomic_load_n(&c->claim_id, __ATOMIC_RELAXED) == claim_id;
}

#endif
