/*
 * chan_stress.c - the channel protocol (chan.h) under load, with real sockets.
 *
 *   chan_stress MODE RX_BYTES TX_BYTES RING SEED
 *   MODE: "proc"  a service process and an application process (fork), the channel in
 *                 a memfd both map, the socket a socketpair: as in life;
 *         "thread" the same two sides as threads of one process (for ThreadSanitizer).
 *
 * The service streams RX_BYTES to the application and takes TX_BYTES from it, in
 * random chunks, pausing at random (so that either side finds the other asleep) and
 * now and then not taking tx bytes for a while (back-pressure). The application runs
 * an event loop of non-blocking reads and writes and poll(2), then blocking calls for
 * the rest. Every byte is checked against the stream it should be.
 *
 * A lost wake-up is a side that waits while the other has given it work: every wait
 * here is a poll with a LOST_MS timeout, and one that times out while the work it
 * waited for is there is counted and fails the run (which goes on, so it ends; a
 * timeout with nothing there is only a slow peer). Spurious
 * wake-ups (readiness that finds nothing) are counted and allowed. Prints one line
 * "ok ..." with the counts and exits 0, or says what failed and exits 1.
 */
#define _GNU_SOURCE
#include "chan.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOST_MS 3000

/* The byte at position i of a stream (rx and tx use different keys). */
static inline uint8_t stream_byte(uint64_t key, uint64_t i)
{
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ key;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return (uint8_t)(x >> 40);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

struct counts {
    uint64_t lost, bad, tokens, drains, bells, fills, spurious_in, spurious_out, waits;
    uint64_t probes, stale_in; /* blocking phase: readiness looks; those rx could not back */
};

struct side {
    int fd;
    void *mem;
    size_t size;
    uint64_t rx_bytes, tx_bytes, seed;
    uint32_t ring;
    struct counts n;
};

static const uint64_t RX_KEY = 0x7278, TX_KEY = 0x7478;

static void maybe_pause(uint64_t *rng)
{
    uint64_t r = rng_next(rng) % 64;
    if (r == 0)
        usleep(50 + rng_next(rng) % 200);
    else if (r < 4)
        sched_yield();
}

/* --- the service ----------------------------------------------------------------- */

static void run_service(struct side *sd)
{
    struct jr_chan_svc s;
    if (jr_chan_create(&s, sd->mem, sd->size, sd->ring, sd->ring, 0) < 0) {
        sd->n.bad++;
        return;
    }
    uint64_t rng = sd->seed * 2 + 1, sent = 0, taken = 0, hold_until = 0;
    uint8_t chunk[65536];
    int rx_done = 0, app_gone = 0;
    for (uint64_t iter = 0; !app_gone; iter++) {
        int progress = 0, waits = 0;
        /* rx: stream bytes to the application. */
        if (sent < sd->rx_bytes) {
            uint32_t n = 1 + (uint32_t)(rng_next(&rng) % sizeof chunk);
            if (n > sd->rx_bytes - sent)
                n = (uint32_t)(sd->rx_bytes - sent);
            for (uint32_t i = 0; i < n; i++)
                chunk[i] = stream_byte(RX_KEY, sent + i);
            int64_t put = jr_chan_svc_deliver(&s, sd->fd, chunk, n);
            if (put < 0) {
                sd->n.bad++;
                return;
            }
            sent += (uint64_t)put;
            progress |= put > 0;
            if (put == 0)
                waits |= JR_CHAN_WAIT_ROOM;
        } else if (!rx_done) {
            jr_chan_svc_rx_eof(&s);
            shutdown(sd->fd, SHUT_WR);
            rx_done = 1;
        }
        /* tx: take the application's bytes, unless holding back (back-pressure). */
        if (iter >= hold_until) {
            int64_t took = jr_chan_svc_collect(&s, sd->fd, chunk, sizeof chunk);
            if (took < 0) {
                sd->n.bad++;
                return;
            }
            for (int64_t i = 0; i < took; i++)
                if (chunk[i] != stream_byte(TX_KEY, taken + (uint64_t)i))
                    sd->n.bad++;
            taken += (uint64_t)took;
            progress |= took > 0;
            if (took == 0 && !jr_chan_svc_tx_eof(&s))
                waits |= JR_CHAN_WAIT_BYTES;
            if (rng_next(&rng) % 256 == 0)
                hold_until = iter + 1 + rng_next(&rng) % 64;
        }
        /* The data plane checks the re-token request when epoll says the application
         * wrote; this loop does not ask epoll while it makes progress, so it looks. */
        (void)jr_chan_svc_answer_retoken(&s, sd->fd);
        maybe_pause(&rng);
        if (progress || iter < hold_until)
            continue;
        if (rx_done && jr_chan_svc_tx_eof(&s) && jr_chan_svc_tx_avail(&s) == 0) {
            if (taken != sd->tx_bytes)
                sd->n.bad++;
            /* Wait for the application to close its end. */
            struct pollfd p = {.fd = sd->fd, .events = POLLIN};
            while (poll(&p, 1, LOST_MS) > 0) {
                char junk[256];
                ssize_t r = recv(sd->fd, junk, sizeof junk, MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN))
                    break;
            }
            app_gone = 1;
            continue;
        }
        if (waits == 0)
            continue;
        int idle = jr_chan_svc_idle(&s, sd->fd, waits);
        if (idle < 0) {
            sd->n.bad++;
            return;
        }
        if (idle == 0)
            continue;
        /* Asleep until the application's bytes: the wait the protocol must end. */
        struct pollfd p = {.fd = sd->fd, .events = POLLIN};
        sd->n.waits++;
        if (poll(&p, 1, LOST_MS) == 0) {
            int64_t room = jr_chan_svc_rx_room(&s), avail = jr_chan_svc_tx_avail(&s);
            if (((waits & JR_CHAN_WAIT_ROOM) && room > 0) ||
                ((waits & JR_CHAN_WAIT_BYTES) && avail > 0)) {
                fprintf(stderr, "service: lost wake-up (room %lld, bytes %lld)\n",
                        (long long)room, (long long)avail);
                sd->n.lost++;
            }
        }
    }
    sd->n.tokens = __atomic_load_n(&s.shm->tokens_sent, __ATOMIC_RELAXED);
}

/* --- the application --------------------------------------------------------------- */

struct app_io {
    int fd;
    struct counts *n;
    struct jr_chan_app *a;
};

/* After a wait timed out: had the service given the application what it waited for? */
static int work_was_there(const struct jr_chan_app *a, short what)
{
    uint32_t tx_used = a->shm->tx.tail - __atomic_load_n(&a->shm->tx.head, __ATOMIC_ACQUIRE);
    return ((what & POLLIN) && (jr_chan_app_rx_avail(a) > 0 ||
                                __atomic_load_n(&a->shm->rx_eof, __ATOMIC_ACQUIRE))) ||
           ((what & POLLOUT) && tx_used < a->tx_cap);
}

static int io_drain(void *ctx)
{
    struct app_io *io = ctx;
    char buf[256];
    ssize_t r = recv(io->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r < 0)
        return errno == EAGAIN ? 0 : -errno;
    io->n->drains++;
    return (int)r;
}

static int io_bell(void *ctx)
{
    struct app_io *io = ctx;
    char b = 'B';
    io->n->bells++;
    return send(io->fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1 || errno == EAGAIN ? 0 : -errno;
}

static int io_fill(void *ctx)
{
    struct app_io *io = ctx;
    io->n->fills++;
    return jr_chan_fill_burst(sendto, io->fd);
}

static int io_wait(void *ctx, short what)
{
    struct app_io *io = ctx;
    struct pollfd p = {.fd = io->fd, .events = what};
    io->n->waits++;
    int r = poll(&p, 1, LOST_MS);
    if (r == 0 && work_was_there(io->a, what)) {
        fprintf(stderr, "application: lost wake-up (blocking %s)\n",
                what == POLLIN ? "read" : "write");
        io->n->lost++;
    }
    return r < 0 ? -errno : 0;
}

static void run_app(struct side *sd)
{
    struct jr_chan_app a;
    /* The service lays the channel out first; a real shim gets the memfd after that. */
    for (int i = 0; i < 1000 && __atomic_load_n((uint32_t *)sd->mem, __ATOMIC_ACQUIRE) !=
                                    JR_CHAN_MAGIC; i++)
        usleep(1000);
    if (jr_chan_attach(&a, sd->mem, sd->size) < 0) {
        sd->n.bad++;
        return;
    }
    struct app_io ctx = {.fd = sd->fd, .n = &sd->n, .a = &a};
    struct jr_chan_io io = {io_drain, io_bell, io_fill, io_wait, &ctx, NULL, NULL, NULL, NULL};
    uint64_t rng = sd->seed * 3 + 7, got = 0, put = 0;
    static uint8_t buf[65536];
    int eof = 0, shut = 0, block_phase = 0, settled = 0;
    while (!eof || !shut) {
        /* Halfway through, switch to blocking calls for the rest. */
        if (!block_phase && got > sd->rx_bytes / 2 && put > sd->tx_bytes / 2)
            block_phase = 1;
        int rd_again = 0, wr_again = 0;
        if (!eof && settled) {
            /* select before a blocking read, as iperf3 does: once a blocking read has
             * returned, readiness must mean bytes or EOF, never a token for bytes it
             * took (jr_chan_app_token_owed), or that read would sleep for ever. */
            struct pollfd p = {.fd = sd->fd, .events = POLLIN};
            if (poll(&p, 1, 0) > 0 && (p.revents & POLLIN)) {
                sd->n.probes++;
                if (jr_chan_app_rx_avail(&a) == 0 &&
                    !__atomic_load_n(&a.shm->rx_eof, __ATOMIC_ACQUIRE)) {
                    fprintf(stderr, "application: readiness with nothing to read\n");
                    sd->n.stale_in++;
                }
            }
        }
        if (!eof) {
            size_t n = 1 + rng_next(&rng) % sizeof buf;
            ssize_t r = jr_chan_read(&a, &io, buf, n, block_phase);
            settled = block_phase && r > 0;
            if (r > 0) {
                for (ssize_t i = 0; i < r; i++)
                    if (buf[i] != stream_byte(RX_KEY, got + (uint64_t)i))
                        sd->n.bad++;
                got += (uint64_t)r;
            } else if (r == 0) {
                eof = 1;
                if (got != sd->rx_bytes) {
                    fprintf(stderr, "application: EOF after %llu of %llu bytes\n",
                            (unsigned long long)got, (unsigned long long)sd->rx_bytes);
                    sd->n.bad++;
                }
            } else if (r == -EAGAIN) {
                rd_again = 1;
            } else {
                sd->n.bad++;
                return;
            }
        }
        if (put < sd->tx_bytes) {
            size_t n = 1 + rng_next(&rng) % sizeof buf;
            if (n > sd->tx_bytes - put)
                n = (size_t)(sd->tx_bytes - put);
            for (size_t i = 0; i < n; i++)
                buf[i] = stream_byte(TX_KEY, put + i);
            ssize_t w = jr_chan_write(&a, &io, buf, n, block_phase);
            if (w > 0)
                put += (uint64_t)w;
            else if (w == -EAGAIN)
                wr_again = 1;
            else {
                sd->n.bad++;
                return;
            }
        }
        if (put == sd->tx_bytes && !shut) {
            jr_chan_shutdown_write(&a, &io);
            shut = 1;
        }
        maybe_pause(&rng);
        if ((rd_again || eof) && (wr_again || put == sd->tx_bytes) && !(eof && shut)) {
            /* The event loop's wait: poll for what EAGAIN said. */
            short ev = (short)((rd_again ? POLLIN : 0) | (wr_again ? POLLOUT : 0));
            struct pollfd p = {.fd = sd->fd, .events = ev};
            sd->n.waits++;
            int r = poll(&p, 1, LOST_MS);
            if (r == 0 && work_was_there(&a, ev)) {
                fprintf(stderr, "application: lost wake-up (poll %s%s)\n",
                        rd_again ? "in" : "", wr_again ? "out" : "");
                sd->n.lost++;
            } else if (r > 0) {
                if ((p.revents & POLLIN) && jr_chan_app_rx_avail(&a) == 0 &&
                    !__atomic_load_n(&a.shm->rx_eof, __ATOMIC_ACQUIRE))
                    sd->n.spurious_in++;
                if ((p.revents & POLLOUT) &&
                    a.tx_cap == a.shm->tx.tail - __atomic_load_n(&a.shm->tx.head,
                                                                 __ATOMIC_ACQUIRE))
                    sd->n.spurious_out++;
            }
        }
    }
    sd->n.spurious_in += a.spurious;
    close(sd->fd);
}

static void *service_thread(void *arg)
{
    run_service(arg);
    return NULL;
}

static void print_counts(const char *who, const struct counts *n)
{
    printf(" %s: lost %llu bad %llu tokens %llu drains %llu bells %llu fills %llu "
           "spurious_in %llu spurious_out %llu waits %llu probes %llu stale_in %llu;",
           who, (unsigned long long)n->lost, (unsigned long long)n->bad,
           (unsigned long long)n->tokens, (unsigned long long)n->drains,
           (unsigned long long)n->bells, (unsigned long long)n->fills,
           (unsigned long long)n->spurious_in, (unsigned long long)n->spurious_out,
           (unsigned long long)n->waits, (unsigned long long)n->probes,
           (unsigned long long)n->stale_in);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s proc|thread RX_BYTES TX_BYTES RING SEED\n", argv[0]);
        return 2;
    }
    int threads = strcmp(argv[1], "thread") == 0;
    uint64_t rx = strtoull(argv[2], NULL, 0), tx = strtoull(argv[3], NULL, 0);
    uint32_t ring = (uint32_t)strtoul(argv[4], NULL, 0);
    uint64_t seed = strtoull(argv[5], NULL, 0) | 1;
    size_t size = jr_chan_size(ring, ring);
    if (size == 0) {
        fprintf(stderr, "RING must be a power of two\n");
        return 2;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 2;
    int one = 1; /* the kernel's minimum: a little filler makes it unwritable */
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
    /* Shared as the service will share it: a memfd, mapped by both. */
    int mfd = memfd_create("joyride-chan-stress", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, (off_t)size) < 0)
        return 2;
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (mem == MAP_FAILED)
        return 2;
    struct counts *shared = mmap(NULL, 2 * sizeof *shared, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return 2;
    struct side svc = {.fd = sv[0], .mem = mem, .size = size, .rx_bytes = rx, .tx_bytes = tx,
                       .seed = seed, .ring = ring};
    struct side app = svc;
    app.fd = sv[1];
    if (threads) {
        pthread_t t;
        pthread_create(&t, NULL, service_thread, &svc);
        run_app(&app);
        pthread_join(t, NULL);
        shared[0] = svc.n;
        shared[1] = app.n;
    } else {
        pid_t pid = fork();
        if (pid == 0) {
            close(sv[1]);
            run_service(&svc);
            shared[0] = svc.n;
            _exit(0);
        }
        close(sv[0]);
        run_app(&app);
        int status;
        waitpid(pid, &status, 0);
        shared[1] = app.n;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            shared[0].bad++;
    }
    int ok = shared[0].lost + shared[1].lost + shared[0].bad + shared[1].bad == 0;
    printf("%s", ok ? "ok" : "FAILED");
    print_counts("service", &shared[0]);
    print_counts("application", &shared[1]);
    printf("\n");
    return ok ? 0 : 1;
}
