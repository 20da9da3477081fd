/*
 * chan_claim_bench.c - what entering ring mode costs per connection (chan_claim.h):
 *
 *   chan_claim_bench METHOD COUNT
 *   METHOD: memfd  a memfd per connection, as first designed: the application creates,
 *                  sizes, seals and maps it and sends it; the service checks, maps, and
 *                  both unmap at the end
 *           arena  chan_claim.h: a slot of the process's arena, claimed with the arena's
 *                  descriptor; the service checks the claim and lays the channel out
 *
 * Both sides run in one process over a socketpair: the figure is the work of a claim,
 * without the wake-ups that any message between two processes costs either method
 * alike. Each channel touches one page of each ring, as a short request and response
 * do. Prints one JSON object: CPU and wall time per claim.
 */
#define _GNU_SOURCE
#include "chan_claim.h"

#include <stdio.h>
#include <string.h>

#define CAP 65536u
#define SLOTS 64u

static double seconds(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int service_claim(struct jr_arenas *as, int sock, struct jr_chan_svc *s)
{
    uint8_t buf[64];
    struct iovec iov = {buf, sizeof buf};
    int fd;
    ssize_t n = jr_chan_svc_recv(sock, &iov, 1, &fd);
    int rc = n < 0 ? (int)n : jr_chan_svc_claim(as, buf, (size_t)n, fd, 1, NULL, s);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* The design the arena replaced: everything per connection. */
static int one_memfd_claim(int app, int svc, uint32_t id)
{
    struct jr_arena_app mine;
    struct jr_arenas theirs;
    struct jr_chan_svc s;
    if (jr_arena_app_create(&mine, 1, CAP, CAP) < 0 || jr_arenas_init(&theirs, 1) < 0)
        return -1;
    int rc = jr_chan_app_claim(app, &mine, 0, id, 0);
    if (rc == 0)
        rc = service_claim(&theirs, svc, &s);
    if (rc == 0) {
        uint32_t put;
        jr_chan_svc_rx_put(&s, "request", 7, &put);
        memcpy(mine.base + mine.slot_bytes - CAP, "response", 8); /* a page of tx */
        jr_chan_svc_release(&theirs, &s);
    }
    jr_arenas_free(&theirs);
    jr_arena_app_destroy(&mine);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s memfd|arena COUNT\n", argv[0]);
        return 2;
    }
    int arena = strcmp(argv[1], "arena") == 0;
    long count = atol(argv[2]);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 2;
    struct jr_arena_app mine;
    struct jr_arenas theirs;
    if (jr_arena_app_create(&mine, SLOTS, CAP, CAP) < 0 || jr_arenas_init(&theirs, 4) < 0)
        return 2;
    double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (long i = 0; i < count; i++) {
        uint32_t id = (uint32_t)i + 1;
        int rc;
        if (arena) {
            uint32_t slot = (uint32_t)i % SLOTS;
            struct jr_chan_svc s;
            rc = jr_chan_app_claim(sv[1], &mine, slot, id, 0);
            if (rc == 0)
                rc = service_claim(&theirs, sv[0], &s);
            if (rc == 0) {
                uint32_t put;
                jr_chan_svc_rx_put(&s, "request", 7, &put);
                memcpy((uint8_t *)jr_arena_app_chan(&mine, slot) + mine.slot_bytes - CAP,
                       "response", 8);
                jr_chan_svc_release(&theirs, &s);
            }
        } else {
            rc = one_memfd_claim(sv[1], sv[0], id);
        }
        if (rc != 0) {
            fprintf(stderr, "claim %ld failed: %d\n", i, rc);
            return 1;
        }
    }
    double wall = seconds(CLOCK_MONOTONIC) - w0, cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("{\"method\": \"%s\", \"count\": %ld, \"wall_us_per_claim\": %.3f, "
           "\"cpu_us_per_claim\": %.3f}\n",
           argv[1], count, wall / (double)count * 1e6, cpu / (double)count * 1e6);
    jr_arenas_free(&theirs);
    jr_arena_app_destroy(&mine);
    return 0;
}
