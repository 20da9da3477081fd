/*
 * chan_claim_bench.c - what entering ring mode costs per connection (chan_claim.h):
 *
 *   chan_claim_bench METHOD COUNT
 *   METHOD: memfd  a memfd per connection, as first designed: the application creates,
 *                  sizes, seals and maps it and sends it; the service checks, maps, and
 *                  both unmap at the end
 *           arena  chan_claim.h: a slot of the process's arena, claimed with the arena's
 *                  descriptor; the service checks the claim and lays the channel out
 *           connection  the arena's claim inside the whole life of a service-mode
 *                  connection's channel, as the data plane and the shim live it: the
 *                  service's delivery (socket, bind to the name that spells the
 *                  4-tuple, connect), the application's accept4 and claim, the
 *                  service's epoll registration, claim and layout, a request and a
 *                  response through the rings, the application's close and the
 *                  service's hang-up (drain, EPOLL_CTL_DEL, close). No TCP: this is
 *                  what each connection costs beyond the TCP work.
 *           tcp    the kernel's whole TCP connection on loopback, both ends: connect,
 *                  accept4, a 64-byte request and response, both closes (the server's
 *                  first, as nginx's after a Connection: close answer). Its server half
 *                  is what the channel and the data plane's TCP replace. It runs in a
 *                  network namespace of its own (unshare; a user namespace too where the
 *                  caller is not root), which goes when the process exits: no traffic
 *                  crosses the machine's own loopback.
 *
 * Both sides run in one process: the figure is the work, without the wake-ups that any
 * message between two processes costs every method alike. Each channel touches one
 * page of each ring, as a short request and response do. Prints one JSON object: CPU
 * and wall time per claim (per connection).
 */
#define _GNU_SOURCE
#include "chan_claim.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

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

/* The arena's way: claim a slot over app/svc, a request and a response through its
 * rings, then the service's release. 0 or the claim's error. */
static int one_arena_claim(int app, int svc, struct jr_arena_app *mine,
                           struct jr_arenas *theirs, uint32_t id)
{
    uint32_t slot = id % SLOTS;
    struct jr_chan_svc s;
    int rc = jr_chan_app_claim(app, mine, slot, id, 0);
    if (rc == 0)
        rc = service_claim(theirs, svc, &s);
    if (rc != 0)
        return rc;
    uint32_t put;
    jr_chan_svc_rx_put(&s, "request", 7, &put);
    memcpy((uint8_t *)jr_arena_app_chan(mine, slot) + mine->slot_bytes - CAP, "response", 8);
    jr_chan_svc_release(theirs, &s);
    return 0;
}

/* A listener like the shim's: a unix stream socket bound to an abstract name. */
static int unix_listener(struct sockaddr_un *name, socklen_t *len)
{
    *name = (struct sockaddr_un){.sun_family = AF_UNIX};
    int n = snprintf(name->sun_path + 1, sizeof name->sun_path - 1,
                     "joyride-claim-bench/%d", (int)getpid());
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)name, *len) < 0 || listen(l, 128) < 0)
        return -1;
    return l;
}

/* One connection's channel, the data plane's steps and the shim's (see the top). */
static int one_connection(int listener, const struct sockaddr_un *to, socklen_t to_len,
                          int epfd, struct jr_arena_app *mine, struct jr_arenas *theirs,
                          uint32_t id)
{
    struct sockaddr_un self = {.sun_family = AF_UNIX};
    int n = snprintf(self.sun_path + 1, sizeof self.sun_path - 1,
                     "joyride/c/10.0.0.1:80/10.0.0.2:%u/%d.%u", 1024 + id % 60000,
                     (int)getpid(), id);
    socklen_t self_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    int svc = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (svc < 0 || bind(svc, (struct sockaddr *)&self, self_len) < 0 ||
        connect(svc, (const struct sockaddr *)to, to_len) < 0)
        return -1;
    struct sockaddr_un peer;
    socklen_t peer_len = sizeof peer;
    int app = accept4(listener, (struct sockaddr *)&peer, &peer_len, SOCK_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
    if (app < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, svc, &ev) < 0)
        return -1;
    int rc = one_arena_claim(app, svc, mine, theirs, id);
    if (rc != 0)
        return rc;
    close(app);
    char junk[64];
    if (recv(svc, junk, sizeof junk, MSG_DONTWAIT) != 0) /* the hang-up's EOF */
        return -1;
    epoll_ctl(epfd, EPOLL_CTL_DEL, svc, NULL);
    close(svc);
    return 0;
}

/* A network namespace of this process's own, its loopback up. 0 or -1. */
static int private_loopback(void)
{
    if (unshare(CLONE_NEWNET) != 0 && unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0)
        return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int rc = s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0 ? 0 : -1;
    ifr.ifr_flags |= IFF_UP;
    if (rc == 0)
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    if (s >= 0)
        close(s);
    return rc;
}

/* The kernel's TCP connection on loopback, both ends (see the top). */
static int one_tcp(int listener, const struct sockaddr_in *to)
{
    char buf[64] = {0};
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (const struct sockaddr *)to, sizeof *to) < 0)
        return -1;
    int a = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (a < 0 || write(c, buf, sizeof buf) != sizeof buf || read(a, buf, sizeof buf) <= 0 ||
        write(a, buf, sizeof buf) != sizeof buf || read(c, buf, sizeof buf) <= 0)
        return -1;
    close(a); /* the server closes first, as nginx after a Connection: close answer */
    if (read(c, buf, sizeof buf) != 0) /* its FIN */
        return -1;
    close(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s memfd|arena|connection|tcp COUNT\n", argv[0]);
        return 2;
    }
    int arena = strcmp(argv[1], "arena") == 0;
    int connection = strcmp(argv[1], "connection") == 0;
    int tcp = strcmp(argv[1], "tcp") == 0;
    long count = atol(argv[2]);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 2;
    struct jr_arena_app mine;
    struct jr_arenas theirs;
    if (jr_arena_app_create(&mine, SLOTS, CAP, CAP) < 0 || jr_arenas_init(&theirs, 4) < 0)
        return 2;
    struct sockaddr_un uname;
    socklen_t ulen = 0;
    struct sockaddr_in tname = {.sin_family = AF_INET,
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t tlen = sizeof tname;
    int one = 1;
    if (tcp && private_loopback() != 0) {
        perror("a network namespace of its own (unshare)");
        return 3;
    }
    int listener = connection ? unix_listener(&uname, &ulen)
                   : tcp      ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)
                              : 0;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    /* TIME-WAIT's sockets are recycled as the kernel does under wrk's load. */
    if (tcp && (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one,
                                           sizeof one) < 0 ||
                bind(listener, (struct sockaddr *)&tname, sizeof tname) < 0 ||
                listen(listener, 128) < 0 ||
                getsockname(listener, (struct sockaddr *)&tname, &tlen) < 0))
        return 2;
    if (listener < 0 || epfd < 0)
        return 2;
    double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (long i = 0; i < count; i++) {
        uint32_t id = (uint32_t)i + 1;
        int rc;
        if (connection) {
            rc = one_connection(listener, &uname, ulen, epfd, &mine, &theirs, id);
        } else if (tcp) {
            rc = one_tcp(listener, &tname);
        } else if (arena) {
            rc = one_arena_claim(sv[1], sv[0], &mine, &theirs, id);
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
