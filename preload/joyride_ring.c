/*
 * joyride_ring.c - ring mode in the shim (issue 17; docs/channels.md), included by
 * joyride_preload.c.
 *
 * Unless JOYRIDE_CHANNELS=0, the shim asks, at listen, to claim ring mode on the
 * listener's connections, and at connect on the new connection (FLAG_CHANNELS); when
 * the service grants it, accept (or connect) claims a slot of this process's arena for
 * each connection it returns (chan_claim.h), and the
 * descriptor's bytes then move through the connection's two rings in shared memory.
 * The descriptor stays the unix socket: it carries tokens and doorbells, so epoll,
 * poll and select keep Linux's meaning. (The process's epoll set may take the arena's
 * bell instead of tokens: joyride_epoll.c intercepts its waits.) Every call that
 * moves bytes on such a descriptor comes here: read, readv, recv, recvfrom, recvmsg,
 * write, writev, send, sendto, sendmsg, sendfile, splice, and shutdown, FIONREAD,
 * close, dup.
 *
 * A descriptor handed to another program (exec, SCM_RIGHTS, posix_spawn, system, popen)
 * or to C's stdio (fdopen) is turned back into a plain stream first (joyride_revert.c). Two processes using one
 * connection at once are not supported (docs/channels.md, "Next"). (splice goes through
 * a buffer; fcntl(F_DUPFD) is dup: joyride_preload.c.)
 */

#include <poll.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "chan_claim.h"

#define JR_RING_CAP (1u << 18)
#define JR_RING_SLOTS 1024u
#define JR_VERDICT_WAIT_MS 5000

enum { JR_RING_PENDING = -1, JR_RING_STREAM = 0, JR_RING_ON = 1 };

struct jr_ring {
    int refs;            /* descriptors naming it (dup) */
    int mode;            /* JR_RING_* */
    int unanswered;      /* stream mode because bytes came with no verdict */
    int rd_shut;         /* shutdown(SHUT_RD): reads return 0 */
    uint32_t arm;        /* what its reads arm (chan.h's io->arm): JR_RX_ARM_BELL while
                          * the bell set watches it (joyride_epoll.c), else 0: a token */
    int foreign;         /* watched where the bell cannot see: tokens, for good */
    int app_sndbuf;      /* the application set SO_SNDBUF: its lock bit is its own */
    int sndbuf_min;      /* the shim set SO_SNDBUF to the minimum (at the first fill) */
    uint32_t slot, claim_id;
    struct jr_arena_app *arena;
    struct jr_chan_app view;
};

/* This process's arena and its slots; a forked child makes its own (the parent's stays
 * mapped for the connections the child inherited). */
struct jr_slots {
    struct jr_arena_app arena;
    pid_t pid;
    uint32_t *claim;     /* the claim using each slot, 0: free */
    uint8_t *closed;     /* its descriptors are closed: free once the service is done */
    uint32_t cursor;
};

static struct jr_ring *jr_rings[JR_MAX_FD];
/* A ring whose last descriptor closed is freed only JR_RETIRED closes later: another
 * thread may still be inside a call on the descriptor (close does not wait for it, on
 * Linux either), and must find the memory it holds still there. */
#define JR_RETIRED 1024
static struct jr_ring *jr_retired[JR_RETIRED];
static unsigned jr_retired_next;
static unsigned char jr_ring_listener[JR_MAX_FD]; /* the listener at fd may claim */
static struct jr_slots *jr_slots;
static uint32_t jr_claim_seq;
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_sendfile)(int, int, off_t *, size_t);
static int (*real_shutdown)(int, int);

/* joyride_revert.c: leaving ring mode. */
static pid_t jr_pid; /* this process's: another pid in this memory is a vfork child's */
static int jr_vfork_child(void);
static void jr_vfork_close(int fd);
static void jr_vfork_dup(int from, int to);
static int jr_revert_passed(const struct msghdr *msg);

/* joyride_epoll.c: the arena's bell. */
static int jr_bell_unseen(struct jr_ring *r);
static void jr_bell_forget(int fd, struct jr_ring *r);
static void jr_bset_closed(int fd);
static void jr_bset_exported(int epfd);
static void jr_epoll_resolve(void);

static void jr_ring_resolve(void)
{
    jr_epoll_resolve();
    RESOLVE(read);
    RESOLVE(write);
    RESOLVE(readv);
    RESOLVE(writev);
    RESOLVE(sendfile);
    RESOLVE(shutdown);
}

/* Ring mode unless JOYRIDE_CHANNELS=0 (stream mode: every byte on the socket). */
static int jr_channels_wanted(void)
{
    const char *v = jr_env(JR_ENV_CHANNELS);
    return v == NULL || strcmp(v, "0") != 0;
}

static struct jr_ring *jr_ring_of(int fd)
{
    return fd >= 0 && fd < JR_MAX_FD ? __atomic_load_n(&jr_rings[fd], __ATOMIC_ACQUIRE) : NULL;
}

/* A slot for a new claim (under jr_lock): free, or closed and released by the service. */
static int jr_slot_take(struct jr_slots *s, uint32_t id)
{
    for (uint32_t i = 0; i < s->arena.slots; i++) {
        uint32_t k = (s->cursor + i) % s->arena.slots;
        if (s->claim[k] != 0 &&
            !(s->closed[k] && jr_chan_app_slot_done(&s->arena, k, s->claim[k])))
            continue;
        s->claim[k] = id;
        s->closed[k] = 0;
        s->cursor = k + 1;
        return (int)k;
    }
    return -1;
}

static struct jr_slots *jr_slots_here(void)
{
    /* jr_pid: this process's, kept by fork's child handler (a getpid a connection
     * otherwise; no claim is made in a vfork child, which would read its parent's). */
    pid_t me = __atomic_load_n(&jr_pid, __ATOMIC_RELAXED);
    if (jr_slots != NULL && jr_slots->pid == me)
        return jr_slots;
    struct jr_slots *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    if (jr_arena_app_create(&s->arena, JR_RING_SLOTS, JR_RING_CAP, JR_RING_CAP) < 0 ||
        (s->claim = calloc(JR_RING_SLOTS, sizeof *s->claim)) == NULL ||
        (s->closed = calloc(JR_RING_SLOTS, 1)) == NULL) {
        jr_arena_app_destroy(&s->arena);
        free(s->claim);
        free(s);
        return NULL;
    }
    /* One door for the process's channels (chan.h): without one, each connection's
     * socket takes its doorbells, as before. */
    (void)jr_arena_app_door(&s->arena);
    s->pid = me;
    jr_slots = s; /* the parent's, if any, stays: inherited connections use it */
    return s;
}

/* accept returned conn from a listener that may claim, or connect made conn with the
 * claim granted: claim ring mode. A connection
 * the shim cannot give a slot still answers with a claim the service refuses at once
 * (a slot past the arena), so its delivery does not wait for the claim's deadline. */
static void jr_ring_claim(int conn)
{
    if (conn < 0 || conn >= JR_MAX_FD)
        return;
    struct jr_ring *r = calloc(1, sizeof *r);
    jr_lock();
    struct jr_slots *s = jr_slots_here();
    uint32_t id = ++jr_claim_seq ? jr_claim_seq : ++jr_claim_seq;
    int slot = s != NULL && r != NULL ? jr_slot_take(s, id) : -1;
    jr_unlock();
    if (slot < 0) {
        free(r);
        if (s != NULL)
            jr_chan_app_claim(conn, &s->arena, s->arena.slots, id, 0); /* refused: a stream */
        return;
    }
    if (jr_chan_app_claim(conn, &s->arena, (uint32_t)slot, id, 0) != 0) {
        jr_lock();
        s->claim[slot] = 0;
        jr_unlock();
        free(r);
        return; /* nothing sent: the service's deadline makes it a stream */
    }
    *r = (struct jr_ring){.refs = 1, .mode = JR_RING_PENDING, .slot = (uint32_t)slot,
                          .claim_id = id, .arena = &s->arena};
    __atomic_store_n(&jr_rings[conn], r, __ATOMIC_RELEASE);
}

static int jr_real_poll(struct pollfd *fds, nfds_t n, int timeout);

/* The verdict on r's claim, if it came, without a system call (lock held or not): the
 * mode, JR_RING_PENDING while there is none. */
static int jr_ring_settle_quiet(struct jr_ring *r)
{
    int m = __atomic_load_n(&r->mode, __ATOMIC_ACQUIRE);
    if (m != JR_RING_PENDING)
        return m;
    int v = jr_chan_app_verdict(r->arena, r->slot, r->claim_id, &r->view);
    if (v == -EAGAIN)
        return JR_RING_PENDING;
    /* After the view: the bell's harvest reads it once it sees ON. */
    __atomic_store_n(&r->mode, v, __ATOMIC_RELEASE);
    return v;
}

/* The connection's mode, learning the verdict if it has come (wait_ms: how long a
 * write may wait for it); -EAGAIN while there is none. Bytes on the socket with no
 * verdict for our claim mean the service refused it without an answer: a stream
 * (chan_claim.h). */
static int jr_ring_settle(int fd, struct jr_ring *r, int wait_ms)
{
    int m = jr_ring_settle_quiet(r);
    if (m != JR_RING_PENDING)
        return m;
    int v = -EAGAIN;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    /* A look, not a wait: the real poll (the shim's would pin a token birth). */
    if (jr_real_poll(&p, 1, 0) > 0) {
        /* The service stores its verdict before any byte it sends. */
        v = jr_chan_app_verdict(r->arena, r->slot, r->claim_id, &r->view);
        if (v == -EAGAIN) {
            v = JR_RING_STREAM;
            r->unanswered = 1;
        }
    } else if (wait_ms > 0) {
        v = jr_chan_app_wait_verdict(r->arena, r->slot, r->claim_id, &r->view, wait_ms);
    }
    if (v != -EAGAIN) /* after the view, as jr_ring_settle_quiet */
        __atomic_store_n(&r->mode, v, __ATOMIC_RELEASE);
    return v;
}

/* chan.h's socket steps, on the real calls. */
struct jr_ring_io {
    int fd;
    struct jr_ring *r;
};

static int jr_io_drain(void *ctx)
{
    struct jr_ring_io *io = ctx;
    char buf[256];
    ssize_t n = real_recvfrom(io->fd, buf, sizeof buf, MSG_DONTWAIT, NULL, NULL);
    if (n < 0)
        return -errno;
    if (n == 0 && !JR_LOAD(&io->r->view.shm->rx_eof))
        return -ECONNRESET; /* the service let go without an EOF: the connection is reset */
    return (int)n;
}

static int jr_io_bell(void *ctx)
{
    char b = 'B';
    if (real_sendto(((struct jr_ring_io *)ctx)->fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL, NULL,
                    0) == 1 || errno == EAGAIN)
        return 0;
    return -errno;
}

static int jr_io_fill(void *ctx)
{
    struct jr_ring_io *io = ctx;
    if (!io->r->sndbuf_min && !io->r->app_sndbuf) {
        /* The kernel's minimum, so that a little filler makes the socket unwritable
         * while tx is full and EPOLLOUT means room (chan.h's writable rule). Set when
         * tx first fills, not at the verdict: most connections never fill it, and the
         * call was one of each accept's. An application's own SO_SNDBUF stands (it
         * only takes more filler). */
        int one = 1;
        real_setsockopt(io->fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
        io->r->sndbuf_min = 1;
    }
    return jr_chan_fill_burst(real_sendto, io->fd);
}

static int jr_io_wait(void *ctx, short what)
{
    struct jr_ring_io *io = ctx;
    struct pollfd p = {.fd = io->fd, .events = what};
    if (poll(&p, 1, -1) < 0)
        return -errno;
    /* The service's end is gone (a reset, or the service itself): nothing will come.
     * With bytes or the EOF in rx, the read takes those first. */
    if ((p.revents & (POLLHUP | POLLERR)) && !(what & POLLIN && (
            jr_chan_app_rx_avail(&io->r->view) > 0 || JR_LOAD(&io->r->view.shm->rx_eof))))
        return what & POLLOUT ? -EPIPE : -ECONNRESET;
    return 0;
}

static int jr_ring_blocking(int fd, int flags)
{
    if (flags & MSG_DONTWAIT)
        return 0;
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_NONBLOCK);
}

/* A call's block argument: 0 for MSG_DONTWAIT, else looked up (an fcntl) only once the
 * call would wait (chan.h, JR_BLOCK_ASK). */
static int jr_ring_block_arg(int flags)
{
    return (flags & MSG_DONTWAIT) ? 0 : JR_BLOCK_ASK;
}

static int jr_io_blocking(void *ctx)
{
    return jr_ring_blocking(((struct jr_ring_io *)ctx)->fd, 0);
}

/* The arena's door (chan.h, JR_ARMED_DOOR): the connection's arena, which is the
 * parent's for a connection a forked child inherited (its door socket too). */
static int jr_io_door(void *ctx)
{
    return jr_arena_app_ring_door(((struct jr_ring_io *)ctx)->r->arena);
}

/* Bytes left in rx that no arm announces: the bell set's ready list, if the ring is
 * the bell's (joyride_epoll.c), else the service's re-token. */
static int jr_io_unseen(void *ctx)
{
    return jr_bell_unseen(((struct jr_ring_io *)ctx)->r);
}

/* chan.h's socket steps for a call on fd; ctx lives in the caller's frame. */
static struct jr_chan_io jr_io_of(struct jr_ring_io *ctx)
{
    return (struct jr_chan_io){jr_io_drain, jr_io_bell, jr_io_fill, jr_io_wait, ctx,
                               jr_io_blocking, jr_io_door, jr_io_unseen, &ctx->r->arm};
}

static ssize_t jr_ring_fail(ssize_t n, int flags)
{
    if (n == -EPIPE && !(flags & MSG_NOSIGNAL))
        raise(SIGPIPE); /* as a write to a reset TCP socket does */
    errno = (int)-n;
    return -1;
}

/* MSG_PEEK: rx's bytes, left where they are. */
static ssize_t jr_ring_peek(int fd, struct jr_ring *r, void *buf, size_t len, int block)
{
    struct jr_chan *c = r->view.shm;
    for (;;) {
        uint32_t avail = jr_chan_app_rx_avail(&r->view);
        if (avail > 0) {
            uint32_t k = len < avail ? (uint32_t)len : avail;
            jr_ring_copy_out(r->view.rx_data, r->view.rx_cap, c->rx.head, buf, k);
            return k;
        }
        if (JR_LOAD(&c->rx_eof))
            return 0;
        if (!block) {
            errno = EAGAIN;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0)
            return -1;
        if ((p.revents & (POLLHUP | POLLERR)) && jr_chan_app_rx_avail(&r->view) == 0 &&
            !JR_LOAD(&c->rx_eof)) {
            errno = ECONNRESET; /* the service's end is gone: nothing will come */
            return -1;
        }
        if (jr_chan_app_rx_avail(&r->view) == 0) {
            /* What woke us was a token for bytes already read: take it, arm, look
             * again (jr_chan_read's steps, without consuming). */
            struct jr_ring_io ctx = {fd, r};
            struct jr_chan_io io = jr_io_of(&ctx);
            int rc = jr_chan_app_drain(&r->view, &io);
            if (rc < 0) {
                errno = -rc;
                return -1;
            }
            jr_chan_app_arm(&r->view, JR_RX_ARM_TOKEN);
        }
    }
}

/* recv(2) and its family on a claiming connection. */
static ssize_t jr_ring_recv(int fd, struct jr_ring *r, void *buf, size_t len, int flags)
{
    int block = jr_ring_block_arg(flags);
    for (;;) {
        int m = jr_ring_settle(fd, r, 0);
        if (m == JR_RING_STREAM)
            return real_recvfrom(fd, buf, len, flags, NULL, NULL);
        if (m == JR_RING_ON)
            break;
        if (block == JR_BLOCK_ASK)
            block = jr_ring_blocking(fd, flags);
        if (!block) {
            errno = EAGAIN;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, -1);
    }
    if (r->rd_shut)
        return 0;
    if (flags & MSG_PEEK)
        return jr_ring_peek(fd, r, buf, len,
                            block == JR_BLOCK_ASK ? jr_ring_blocking(fd, flags) : block);
    struct jr_ring_io ctx = {fd, r};
    struct jr_chan_io io = jr_io_of(&ctx);
    size_t got = 0;
    ssize_t n;
    do {
        n = jr_chan_read(&r->view, &io, (char *)buf + got, len - got, block);
        if (n > 0)
            got += (size_t)n;
    } while (n > 0 && (flags & MSG_WAITALL) && block && got < len);
    if (got > 0)
        return (ssize_t)got;
    return n < 0 ? jr_ring_fail(n, MSG_NOSIGNAL) : 0;
}

/* The mode a write goes by, settled: a write before the verdict waits for it, as its
 * bytes must go where the mode says. JR_RING_ON or JR_RING_STREAM; -1 with errno set
 * (EAGAIN: no verdict in JR_VERDICT_WAIT_MS, the service is stuck). */
static int jr_ring_write_mode(int fd, struct jr_ring *r)
{
    int m = jr_ring_settle(fd, r, JR_VERDICT_WAIT_MS);
    if (m == JR_RING_STREAM || m == JR_RING_ON)
        return m;
    errno = EAGAIN;
    return -1;
}

/* A write on a ring-mode connection, its bytes from source (jr_chan_write_from). */
static ssize_t jr_ring_write_from(int fd, struct jr_ring *r, jr_chan_source source, void *src,
                                  size_t len, int flags)
{
    /* After our shutdown(SHUT_WR), or once the service let the connection go (a reset),
     * a write fails at once, as on a TCP socket: bytes put in tx then would be lost. */
    if (JR_LOAD(&r->view.shm->tx_eof) || JR_LOAD(&r->view.shm->magic) != JR_CHAN_MAGIC)
        return jr_ring_fail(-EPIPE, flags);
    struct jr_ring_io ctx = {fd, r};
    struct jr_chan_io io = jr_io_of(&ctx);
    ssize_t n = jr_chan_write_from(&r->view, &io, source, src, len, jr_ring_block_arg(flags));
    return n < 0 ? jr_ring_fail(n, flags) : n;
}

/* send(2) and its family on a claiming connection. */
static ssize_t jr_ring_send(int fd, struct jr_ring *r, const void *buf, size_t len, int flags)
{
    int m = jr_ring_write_mode(fd, r);
    if (m == JR_RING_STREAM)
        return real_sendto(fd, buf, len, flags, NULL, 0);
    if (m < 0)
        return -1;
    return jr_ring_write_from(fd, r, jr_chan_source_buf, (void *)buf, len, flags);
}

static ssize_t jr_ring_send_buf(int fd, struct jr_ring *r, void *buf, size_t len, int flags)
{
    return jr_ring_send(fd, r, buf, len, flags);
}

/* readv/writev: op on each buffer in turn, the buffers after one that moved bytes
 * with later_flags too (MSG_DONTWAIT for a read: only the first may block;
 * MSG_NOSIGNAL for a write: a later failure is a short count, not a signal). */
static ssize_t jr_ring_each(int fd, struct jr_ring *r, const struct iovec *iov, int n,
                            int flags, int later_flags,
                            ssize_t (*op)(int, struct jr_ring *, void *, size_t, int))
{
    ssize_t total = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len == 0)
            continue;
        ssize_t k = op(fd, r, iov[i].iov_base, iov[i].iov_len,
                       total > 0 ? flags | later_flags : flags);
        if (k < 0)
            return total > 0 ? total : -1;
        total += k;
        if ((size_t)k < iov[i].iov_len)
            break;
    }
    return total;
}

static ssize_t jr_ring_recvv(int fd, struct jr_ring *r, const struct iovec *iov, int n,
                             int flags)
{
    return jr_ring_each(fd, r, iov, n, flags, MSG_DONTWAIT, jr_ring_recv);
}

static ssize_t jr_ring_sendv(int fd, struct jr_ring *r, const struct iovec *iov, int n,
                             int flags)
{
    return jr_ring_each(fd, r, iov, n, flags, MSG_NOSIGNAL, jr_ring_send_buf);
}

/* jr_chan_source for sendfile: a file read at pos (pread: its position stays). */
struct jr_file_source {
    int fd;
    off_t pos;
};

static ssize_t jr_file_put(void *ctx, uint8_t *dst, uint32_t n, size_t done)
{
    const struct jr_file_source *f = ctx;
    ssize_t got;
    do
        got = pread(f->fd, dst, n, f->pos + (off_t)done);
    while (got < 0 && errno == EINTR);
    return got < 0 ? -errno : got;
}

/* A non-blocking sendfile that found tx full (EAGAIN) before it read the file: what
 * Linux's would have said, which reads the file first. 0 for a regular file with no
 * byte at pos; -1 with ESPIPE for a pipe or socket read at an offset; else -1 with
 * EAGAIN. Only on this path, so a sendfile that moves bytes makes no fstat. */
static ssize_t jr_sendfile_full(int fd, off_t pos, int at_offset)
{
    struct stat st;
    if (fstat(fd, &st) == 0) {
        if (S_ISREG(st.st_mode) && st.st_size <= pos)
            return 0;
        if (at_offset && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
            errno = ESPIPE;
            return -1;
        }
    }
    errno = EAGAIN;
    return -1;
}

/* sendfile(2) on a connection in ring mode (sendfile settled it): the file's bytes go
 * straight into tx (pread into its free space: one copy, as the page cache's into a
 * socket buffer), so the file's position moves by exactly what was sent. */
static ssize_t jr_ring_sendfile(int out, struct jr_ring *r, int in, off_t *offset,
                                size_t count)
{
    struct jr_file_source f = {in, offset ? *offset : lseek(in, 0, SEEK_CUR)};
    if (f.pos < 0) {
        /* A pipe or socket without an offset: Linux's sendfile says EINVAL (with an
         * offset, pread's ESPIPE, as Linux's). */
        if (errno == ESPIPE)
            errno = EINVAL;
        return -1;
    }
    if (count == 0)
        return 0;
    ssize_t n = jr_ring_write_from(out, r, jr_file_put, &f, count, 0);
    if (n < 0 && errno == EAGAIN)
        return jr_sendfile_full(in, f.pos, offset != NULL);
    if (n <= 0)
        return n;
    if (offset)
        *offset = f.pos + n;
    else
        lseek(in, f.pos + n, SEEK_SET);
    return n;
}

/* close: the descriptor goes; the connection's end is the socket's last close (the
 * service sees the hang-up), so a forked sibling's copy goes on working. */
static void jr_ring_close(int fd)
{
    struct jr_ring *r = jr_ring_of(fd);
    jr_bset_closed(fd);
    if (r == NULL)
        return;
    if (jr_vfork_child()) {
        jr_vfork_close(fd); /* its parent's memory: a note, not the tables */
        return;
    }
    jr_bell_forget(fd, r);
    __atomic_store_n(&jr_rings[fd], NULL, __ATOMIC_RELEASE);
    jr_lock();
    if (--r->refs == 0) {
        struct jr_slots *s = jr_slots;
        if (s != NULL && &s->arena == r->arena && s->claim[r->slot] == r->claim_id) {
            if (r->unanswered)
                s->claim[r->slot] = 0; /* the service never wrote there */
            else
                s->closed[r->slot] = 1; /* free once the service says it is done */
        }
        struct jr_ring **retire = &jr_retired[jr_retired_next++ % JR_RETIRED];
        free(*retire);
        *retire = r;
    }
    jr_unlock();
}

static void jr_ring_dup(int from, int to)
{
    struct jr_ring *r = jr_ring_of(from);
    if (to < 0 || to >= JR_MAX_FD || to == from)
        return;
    if (jr_slots != NULL && jr_vfork_child()) {
        jr_vfork_dup(from, to); /* its parent's memory: a note, not the tables */
        return;
    }
    jr_bset_exported(from); /* a second name for the bell set: waits the shim cannot see */
    jr_ring_close(to); /* dup2/dup3 closed what was there */
    if (r == NULL)
        return;
    jr_lock();
    r->refs++;
    jr_unlock();
    __atomic_store_n(&jr_rings[to], r, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------ the intercepted calls */

ssize_t read(int fd, void *buf, size_t len)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r == NULL) {
        RESOLVE(read);
        return real_read(fd, buf, len);
    }
    return jr_ring_recv(fd, r, buf, len, 0);
}

ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
    if (len > buflen)
        abort(); /* glibc's __chk_fail: a buffer overflow */
    return read(fd, buf, len);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r == NULL) {
        jr_init();
        return real_recvfrom(fd, buf, len, flags, NULL, NULL);
    }
    return jr_ring_recv(fd, r, buf, len, flags);
}

ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    if (len > buflen)
        abort();
    return recv(fd, buf, len, flags);
}

ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                       struct sockaddr *addr, socklen_t *addrlen)
{
    if (len > buflen)
        abort();
    return recvfrom(fd, buf, len, flags, addr, addrlen);
}

ssize_t readv(int fd, const struct iovec *iov, int n)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r == NULL) {
        RESOLVE(readv);
        return real_readv(fd, iov, n);
    }
    return jr_ring_recvv(fd, r, iov, n, 0);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r == NULL) {
        RESOLVE(write);
        return real_write(fd, buf, len);
    }
    return jr_ring_send(fd, r, buf, len, 0);
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r == NULL) {
        jr_init();
        return real_sendto(fd, buf, len, flags, NULL, 0);
    }
    return jr_ring_send(fd, r, buf, len, flags);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r == NULL) {
        RESOLVE(writev);
        return real_writev(fd, iov, n);
    }
    return jr_ring_sendv(fd, r, iov, n, 0);
}

ssize_t sendfile(int out, int in, off_t *offset, size_t count)
{
    struct jr_ring *r = jr_ring_of(out);
    RESOLVE(sendfile);
    int m = r == NULL ? JR_RING_STREAM : jr_ring_settle(out, r, JR_VERDICT_WAIT_MS);
    if (m == JR_RING_STREAM)
        return real_sendfile(out, in, offset, count);
    if (m != JR_RING_ON) {
        errno = EAGAIN; /* no verdict yet: the bytes' way is not known */
        return -1;
    }
    return jr_ring_sendfile(out, r, in, offset, count);
}

ssize_t sendfile64(int out, int in, off_t *offset, size_t count)
{
    return sendfile(out, in, offset, count);
}

/* splice(2) with a ring-mode socket on one side (the other is a pipe, as the kernel
 * requires): through a buffer, never taking more from one side than the other has room
 * for, so no byte is lost to a short write. SPLICE_F_NONBLOCK makes the pipe side
 * non-blocking, as the kernel's does; the socket's own O_NONBLOCK holds for the ring. */
static ssize_t (*real_splice)(int, loff_t *, int, loff_t *, size_t, unsigned int);

/* Room in a pipe (its size less what it holds), or -1. */
static long jr_pipe_room(int fd)
{
    int size = fcntl(fd, F_GETPIPE_SZ), held = 0;
    if (size < 0 || ioctl(fd, FIONREAD, &held) != 0)
        return -1;
    return size > held ? size - held : 0;
}

static ssize_t jr_ring_splice(int in, struct jr_ring *rin, int out, struct jr_ring *rout,
                              size_t len, unsigned int flags)
{
    char buf[1u << 16];
    int pipe_block = !(flags & SPLICE_F_NONBLOCK);
    size_t want = len < sizeof buf ? len : sizeof buf;
    if (rin != NULL) { /* ring -> pipe */
        for (;;) {
            long room = jr_pipe_room(out);
            if (room < 0) {
                errno = EINVAL; /* not a pipe: the kernel's answer */
                return -1;
            }
            if (room > 0) {
                want = want < (size_t)room ? want : (size_t)room;
                break;
            }
            if (!pipe_block) {
                errno = EAGAIN;
                return -1;
            }
            struct pollfd p = {.fd = out, .events = POLLOUT};
            if (poll(&p, 1, -1) < 0)
                return -1;
        }
        ssize_t got = jr_ring_recv(in, rin, buf, want, 0);
        if (got <= 0)
            return got;
        for (ssize_t put = 0; put < got;) { /* it fits: the room was measured */
            ssize_t w = write(out, buf + put, (size_t)(got - put));
            if (w < 0 && errno != EINTR && errno != EAGAIN)
                return put > 0 ? put : -1; /* the pipe's reader left (EPIPE) */
            put += w > 0 ? w : 0;
        }
        return got;
    }
    /* pipe -> ring: no more than tx takes without blocking when the socket does not. */
    struct jr_chan *c = rout->view.shm;
    uint32_t room = rout->view.tx_cap - (c->tx.tail - JR_LOAD(&c->tx.head));
    if (!jr_ring_blocking(out, 0)) {
        if (room == 0) {
            errno = EAGAIN;
            return -1;
        }
        want = want < room ? want : room;
    }
    if (!pipe_block) {
        struct pollfd p = {.fd = in, .events = POLLIN};
        if (poll(&p, 1, 0) == 0) {
            errno = EAGAIN;
            return -1;
        }
    }
    ssize_t got = read(in, buf, want);
    if (got <= 0)
        return got;
    for (ssize_t put = 0; put < got;) {
        ssize_t w = jr_ring_send(out, rout, buf + put, (size_t)(got - put), MSG_NOSIGNAL);
        if (w < 0)
            return put > 0 ? put : -1;
        put += w;
    }
    return got;
}

ssize_t splice(int in, loff_t *off_in, int out, loff_t *off_out, size_t len,
               unsigned int flags)
{
    RESOLVE(splice);
    struct jr_ring *rin = jr_ring_of(in), *rout = jr_ring_of(out);
    if (rin != NULL && jr_ring_settle(in, rin, 0) != JR_RING_ON)
        rin = NULL; /* a stream: the kernel's splice */
    if (rout != NULL && jr_ring_settle(out, rout, JR_VERDICT_WAIT_MS) != JR_RING_ON)
        rout = NULL;
    if (rin == NULL && rout == NULL)
        return real_splice(in, off_in, out, off_out, len, flags);
    if ((rin != NULL && off_in != NULL) || (rout != NULL && off_out != NULL) ||
        (rin != NULL && rout != NULL)) {
        errno = rin != NULL && rout != NULL ? EINVAL : ESPIPE; /* as on a socket */
        return -1;
    }
    if (len == 0)
        return 0;
    return jr_ring_splice(in, rin, out, rout, len, flags);
}

int shutdown(int fd, int how)
{
    struct jr_ring *r = jr_ring_of(fd);
    RESOLVE(shutdown);
    int m = r == NULL ? JR_RING_STREAM : jr_ring_settle(fd, r, JR_VERDICT_WAIT_MS);
    if (m == JR_RING_STREAM)
        return real_shutdown(fd, how);
    if (m != JR_RING_ON) {
        errno = EAGAIN;
        return -1;
    }
    /* The socket itself stays open both ways: its bytes are the rings' wake-ups. */
    if (how == SHUT_RD || how == SHUT_RDWR)
        r->rd_shut = 1;
    if (how == SHUT_WR || how == SHUT_RDWR) {
        struct jr_ring_io ctx = {fd, r};
        struct jr_chan_io io = jr_io_of(&ctx);
        jr_chan_shutdown_write(&r->view, &io);
    }
    return 0;
}

/* The application set SO_SNDBUF on fd (applied to the unix socket, as the readback and
 * the kernel's checks want; in ring mode a larger buffer only takes more filler while
 * tx is full). */
static void jr_ring_sndbuf_set(int fd)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r != NULL)
        r->app_sndbuf = 1;
}

/* SO_BUF_LOCK on a ring-mode descriptor: the send buffer's lock bit is the shim's own
 * setting unless the application set SO_SNDBUF. */
static void jr_ring_buf_lock(int fd, void *optval, const socklen_t *optlen)
{
    struct jr_ring *r = jr_ring_of(fd);
    int v;
    if (r == NULL || r->app_sndbuf || optval == NULL || optlen == NULL ||
        *optlen < sizeof v || jr_ring_settle(fd, r, 0) != JR_RING_ON)
        return;
    memcpy(&v, optval, sizeof v);
    v &= ~1; /* linux/socket.h's SOCK_SNDBUF_LOCK */
    memcpy(optval, &v, sizeof v);
}

/* FIONREAD on a ring: rx's bytes (-1: not a ring-mode descriptor). */
static int jr_ring_nread(int fd, int *out)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r == NULL || jr_ring_settle(fd, r, 0) != JR_RING_ON)
        return -1;
    *out = r->rd_shut ? 0 : (int)jr_chan_app_rx_avail(&r->view);
    return 0;
}

#include "joyride_epoll.c"
#include "joyride_revert.c"
