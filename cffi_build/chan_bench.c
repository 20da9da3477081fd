/*
 * chan_bench.c - what a shared-memory channel (chan.h) saves over the unix socket the
 * service uses today, between two processes on this machine.
 *
 *   chan_bench TRANSPORT WORKLOAD COUNT
 *   TRANSPORT: unix      a socketpair, read/write (today's application channel)
 *              ring      chan.h, both sides sleep when idle (tokens and doorbells)
 *              ring-poll chan.h, the service side polls the ring and never sleeps
 *   WORKLOAD:  rr        64-byte request, 64-byte response (the application writes,
 *                        the service answers), COUNT round trips
 *              bulk      the service streams COUNT chunks of 64 KiB to the application
 *
 * Prints one JSON object: wall time and CPU time (both processes) per operation.
 */
#define _GNU_SOURCE
#include "chan.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RR_BYTES 64
#define BULK_BYTES 65536
#define RING (1u << 18)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_seconds(int who)
{
    struct rusage u;
    getrusage(who, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

static int full_write(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int full_read(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* --- the application's socket steps ------------------------------------------------ */

static int io_drain(void *ctx)
{
    char buf[256];
    ssize_t r = recv(*(int *)ctx, buf, sizeof buf, MSG_DONTWAIT);
    return r < 0 ? (errno == EAGAIN ? 0 : -errno) : (int)r;
}

static int io_bell(void *ctx)
{
    char b = 'B';
    return send(*(int *)ctx, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1 || errno == EAGAIN ? 0
                                                                                       : -errno;
}

static int io_fill(void *ctx)
{
    return jr_chan_fill_burst(sendto, *(int *)ctx);
}

static int io_wait(void *ctx, short what)
{
    struct pollfd p = {.fd = *(int *)ctx, .events = what};
    return poll(&p, 1, -1) < 0 ? -errno : 0;
}

static int app_read_all(struct jr_chan_app *a, const struct jr_chan_io *io, uint8_t *p,
                        size_t n)
{
    while (n) {
        ssize_t r = jr_chan_read(a, io, p, n, 1);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* --- the service's side ------------------------------------------------------------ */

/* Sleep on fd until the application's bytes, unless the protocol says there is work. */
static int svc_wait(struct jr_chan_svc *s, int fd, int waits)
{
    int idle = jr_chan_svc_idle(s, fd, waits);
    if (idle > 0) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        poll(&pf, 1, -1);
    }
    return idle < 0 ? -1 : 0;
}

/* Put n bytes into rx, sending tokens and waiting for room as the protocol says. */
static int svc_put_all(struct jr_chan_svc *s, int fd, const uint8_t *p, uint32_t n)
{
    while (n) {
        int64_t put = jr_chan_svc_deliver(s, fd, p, n);
        if (put < 0)
            return -1;
        p += put;
        n -= (uint32_t)put;
        if (put == 0 && svc_wait(s, fd, JR_CHAN_WAIT_ROOM) < 0)
            return -1;
    }
    return 0;
}

/* Take exactly n bytes from tx; spin: poll the ring, never arm (never rung). */
static int svc_take_all(struct jr_chan_svc *s, int fd, uint8_t *p, uint32_t n, int spin)
{
    while (n) {
        int64_t took = jr_chan_svc_collect(s, fd, p, n);
        if (took < 0)
            return -1;
        p += took;
        n -= (uint32_t)took;
        if (took == 0 && !spin && svc_wait(s, fd, JR_CHAN_WAIT_BYTES) < 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s unix|ring|ring-poll rr|bulk COUNT\n", argv[0]);
        return 2;
    }
    const char *transport = argv[1], *workload = argv[2];
    long count = atol(argv[3]);
    int ring = strncmp(transport, "ring", 4) == 0, spin = strcmp(transport, "ring-poll") == 0;
    int rr = strcmp(workload, "rr") == 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 2;
    if (ring) {
        int one = 1;
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
    }
    size_t size = jr_chan_size(RING, RING);
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return 2;
    struct jr_chan_svc s;
    jr_chan_create(&s, mem, size, RING, RING, 0);
    static uint8_t buf[BULK_BYTES];
    memset(buf, 'x', sizeof buf);
    double t0 = now(), c0 = cpu_seconds(RUSAGE_SELF);
    pid_t pid = fork();
    if (pid == 0) { /* the service */
        close(sv[1]);
        int fd = sv[0];
        for (long i = 0; i < count; i++) {
            int rc;
            if (rr) {
                rc = ring ? svc_take_all(&s, fd, buf, RR_BYTES, spin)
                          : full_read(fd, buf, RR_BYTES);
                if (rc == 0)
                    rc = ring ? svc_put_all(&s, fd, buf, RR_BYTES)
                              : full_write(fd, buf, RR_BYTES);
            } else {
                rc = ring ? svc_put_all(&s, fd, buf, BULK_BYTES)
                          : full_write(fd, buf, BULK_BYTES);
            }
            if (rc < 0)
                _exit(1);
        }
        _exit(0);
    }
    close(sv[0]);
    int fd = sv[1];
    struct jr_chan_app a;
    struct jr_chan_io io = {io_drain, io_bell, io_fill, io_wait, &fd, NULL, NULL, NULL, NULL};
    jr_chan_attach(&a, mem, size);
    int failed = 0;
    for (long i = 0; i < count && !failed; i++) {
        if (rr) {
            if (ring)
                failed = jr_chan_write(&a, &io, buf, RR_BYTES, 1) != RR_BYTES ||
                         app_read_all(&a, &io, buf, RR_BYTES) < 0;
            else
                failed = full_write(fd, buf, RR_BYTES) < 0 || full_read(fd, buf, RR_BYTES) < 0;
        } else {
            failed = ring ? app_read_all(&a, &io, buf, BULK_BYTES) < 0
                          : full_read(fd, buf, BULK_BYTES) < 0;
        }
    }
    int status;
    waitpid(pid, &status, 0);
    double wall = now() - t0;
    double cpu = cpu_seconds(RUSAGE_SELF) - c0 + cpu_seconds(RUSAGE_CHILDREN);
    if (failed || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "transfer failed\n");
        return 1;
    }
    printf("{\"transport\": \"%s\", \"workload\": \"%s\", \"count\": %ld, "
           "\"wall_us_per_op\": %.3f, \"cpu_us_per_op\": %.3f}\n",
           transport, workload, count, wall / (double)count * 1e6, cpu / (double)count * 1e6);
    return 0;
}
