/*
 * chan_claim_test.c - the claim of cffi_build/chan_claim.h, run by
 * tests/unit/channel/test_chan_claim.py under AddressSanitizer and UBSan.
 *
 * Each case prints "case NAME ok" or "case NAME FAILED: why" and the program exits 1 on
 * any failure. The service and the application are two processes where it matters (a
 * futex wake, bytes through the rings); the refusals run both sides in one process
 * over a socketpair, which the kernel treats the same.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "chan_claim.h"

#define RX_CAP 4096u
#define TX_CAP 4096u
#define SLOTS 4u

static int failures;

/* The first failure of a case names it (later ones often follow from it). */
#define FIRST(...) ((ok ? snprintf(why, sizeof why, __VA_ARGS__) : 0), ok = 0)

static void verdict(const char *name, int ok, const char *why)
{
    if (ok) {
        printf("case %s ok\n", name);
    } else {
        printf("case %s FAILED: %s\n", name, why);
        failures++;
    }
}

/* What the service's loop does with the application's first bytes. */
static int service_takes(struct jr_arenas *as, int sock, int claimable, struct jr_chan_svc *out)
{
    uint8_t buf[256];
    struct iovec iov = {buf, sizeof buf};
    int fd;
    ssize_t n = jr_chan_svc_recv(sock, &iov, 1, &fd);
    if (n < 0)
        return (int)n;
    int rc = jr_chan_svc_claim(as, buf, (size_t)n, fd, claimable, NULL, out);
    if (fd >= 0)
        close(fd);
    return rc;
}

static void pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("socketpair");
        exit(2);
    }
}

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

/* Two connections to one application with an arena, and a service. */
struct bed {
    struct jr_arenas as;
    struct jr_arena_app ar;
    int a[2], b[2];
};

static void bed_open(struct bed *t)
{
    jr_arenas_init(&t->as, 4);
    jr_arena_app_create(&t->ar, SLOTS, RX_CAP, TX_CAP);
    pair(t->a);
    pair(t->b);
}

static void bed_close(struct bed *t)
{
    jr_arenas_free(&t->as);
    jr_arena_app_destroy(&t->ar);
    close(t->a[0]), close(t->a[1]), close(t->b[0]), close(t->b[1]);
}

/* Accepted: the layout is there for the application, with its claim's number; two
 * slots of one arena share one mapping; released slots read as done, and the arena is
 * unmapped by trim once idle. */
static void case_accept_release(void)
{
    struct bed t;
    bed_open(&t);
    struct jr_arenas *as = &t.as;
    struct jr_arena_app *ar = &t.ar;
    int *a = t.a, *b = t.b;
    struct jr_chan_svc s1, s2;
    struct jr_chan_app v;
    jr_chan_app_claim(a[1], ar, 0, 7, 0);
    jr_chan_app_claim(b[1], ar, 3, 8, 0);
    int pending = jr_chan_app_verdict(ar, 0, 7, &v);
    int r1 = service_takes(as, a[0], 1, &s1);
    int r2 = service_takes(as, b[0], 1, &s2);
    int v1 = jr_chan_app_verdict(ar, 0, 7, &v);
    int stale = jr_chan_app_verdict(ar, 0, 6, &v); /* another claim's number */
    int v2 = jr_chan_app_verdict(ar, 3, 8, &v);
    int ok = pending == -EAGAIN && r1 == 0 && r2 == 0 && v1 == 1 && stale == -EAGAIN &&
             v2 == 1 && as->mapped == 1 && as->a[s1.arena].live == 2 && s2.slot == 3 &&
             v.rx_cap == RX_CAP && !jr_chan_app_slot_done(ar, 0, 7);
    jr_chan_svc_release(as, &s1);
    ok = ok && jr_chan_app_slot_done(ar, 0, 7) && !jr_chan_app_slot_done(ar, 3, 8);
    jr_arenas_trim(as, -1); /* one channel still lives: the arena stays */
    ok = ok && as->mapped == 1;
    jr_chan_svc_release(as, &s2);
    jr_arenas_trim(as, -1);
    ok = ok && as->mapped == 0 && jr_chan_app_slot_done(ar, 3, 8);
    /* The slot is the application's again: a new claim on it is accepted. */
    jr_chan_app_claim(a[1], ar, 0, 9, 0);
    int again = service_takes(as, a[0], 1, &s1);
    ok = ok && again == 0 && jr_chan_app_verdict(ar, 0, 9, &v) == 1;
    jr_chan_svc_release(as, &s1);
    verdict("accept_release", ok, "verdicts, slots or the arena's mapping are wrong");
    bed_close(&t);
}

/* Two claims of one slot: the second is refused and nothing of the first changes. */
static void case_busy_slot(void)
{
    struct bed t;
    bed_open(&t);
    struct jr_arenas *as = &t.as;
    struct jr_arena_app *ar = &t.ar;
    int *a = t.a, *b = t.b;
    struct jr_chan_svc s1, s2;
    struct jr_chan_app v;
    jr_chan_app_claim(a[1], ar, 1, 1, 0);
    int r1 = service_takes(as, a[0], 1, &s1);
    uint32_t put;
    jr_chan_svc_rx_put(&s1, "live", 4, &put);
    /* A claim of the same slot (the application zeroes the word it claims). */
    jr_chan_app_claim(b[1], ar, 1, 2, 0);
    int r2 = service_takes(as, b[0], 1, &s2);
    /* The application's reset of the word is its own business; the service wrote
     * nothing: the live channel's bytes and indices are as they were. */
    struct jr_chan *c = jr_arena_app_chan(ar, 1);
    int ok = r1 == 0 && r2 == -EBUSY && c->claim_id == 1 && c->rx.tail == 4 &&
             memcmp(s1.rx_data, "live", 4) == 0 && as->a[s1.arena].live == 1 &&
             jr_chan_app_verdict(ar, 1, 2, &v) == -EAGAIN;
    verdict("busy_slot", ok, "a second claim of a live slot was not refused cleanly");
    jr_chan_svc_release(as, &s1);
    bed_close(&t);
}

/* Each malformed or hostile claim is refused with its reason, and leaks nothing. */
static void case_refusals(void)
{
    struct jr_arenas as;
    struct jr_arena_app ar;
    jr_arenas_init(&as, 2);
    jr_arena_app_create(&ar, SLOTS, RX_CAP, TX_CAP);
    int before = open_fds();
    struct jr_chan_svc s = {.arena = -1}, s1 = {.arena = -1}, s2 = {.arena = -1};
    struct jr_chan_claim good = {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 5, RX_CAP, TX_CAP, 0, 0};
    struct {
        const char *name;
        struct jr_chan_claim cl;
        size_t len;
        int expect;
    } cases[] = {
        {"short", good, sizeof good - 1, -EPROTO},
        {"magic", {0x12345678, JR_CLAIM_VERSION, 5, RX_CAP, TX_CAP, 0, 0}, sizeof good, -EPROTO},
        {"version", {JR_CLAIM_MAGIC, 99, 5, RX_CAP, TX_CAP, 0, 0}, sizeof good, -EPROTO},
        {"unknown_flag", {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 5, RX_CAP, TX_CAP, 4, 0}, sizeof good,
         -EPROTO},
        {"id0", {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 0, RX_CAP, TX_CAP, 0, 0}, sizeof good, -EPROTO},
        {"cap3", {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 5, 3, TX_CAP, 0, 0}, sizeof good, -EINVAL},
        {"cap_huge", {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 5, 1u << 31, TX_CAP, 0, 0}, sizeof good,
         -EINVAL},
        {"off_grid", {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 5, RX_CAP, TX_CAP, 0, 4096 + 64},
         sizeof good, -EINVAL},
        {"past_end", {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 5, RX_CAP, TX_CAP, 0,
                      (uint64_t)SLOTS * 3 * 4096}, sizeof good, -EINVAL},
        {"offset_wraps", {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 5, RX_CAP, TX_CAP, 0,
                          UINT64_MAX - 4095}, sizeof good, -EINVAL},
    };
    int ok = 1;
    char why[256] = "";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = jr_chan_svc_claim(&as, &cases[i].cl, cases[i].len, ar.fd, 1, NULL, &s);
        if (rc != cases[i].expect)
            FIRST("%s: %d, expected %d", cases[i].name, rc, cases[i].expect);
    }
    /* No descriptor. */
    if (jr_chan_svc_claim(&as, &good, sizeof good, -1, 1, NULL, &s) != -EBADF)
        FIRST("no descriptor");
    /* A memfd its owner could still shrink under the service's mapping (SIGBUS). */
    int loose = memfd_create("loose", MFD_CLOEXEC);
    ftruncate(loose, (off_t)ar.size);
    if (jr_chan_svc_claim(&as, &good, sizeof good, loose, 1, NULL, &s) != -EPERM)
        FIRST("unsealed memfd");
    /* A file that is no memfd at all (F_GET_SEALS fails). */
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (jr_chan_svc_claim(&as, &good, sizeof good, devnull, 1, NULL, &s) != -EPERM)
        FIRST("/dev/null");
    /* The arena opened read-only: its sender could not write there itself. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", ar.fd);
    int ro = open(path, O_RDONLY | O_CLOEXEC);
    int rc = jr_chan_svc_claim(&as, &good, sizeof good, ro, 1, NULL, &s);
    if (rc != -EPERM)
        FIRST("read-only arena: %d", rc);
    /* Sealed, but too small for one slot. */
    struct jr_arena_app tiny;
    jr_arena_app_create(&tiny, 1, 1024, 1024);
    struct jr_chan_claim big = good;
    big.rx_cap = big.tx_cap = 65536;
    if (jr_chan_svc_claim(&as, &big, sizeof big, tiny.fd, 1, NULL, &s) != -EINVAL)
        FIRST("slot larger than the arena");
    /* Not claimable (bytes already sent): refused, and answered in the slot. */
    struct jr_chan_app v;
    struct jr_chan_claim late = good;
    late.claim_id = 77;
    rc = jr_chan_svc_claim(&as, &late, sizeof late, ar.fd, 0, NULL, &s);
    if (rc != -EALREADY || jr_chan_app_verdict(&ar, 0, 77, &v) != 0 ||
        !jr_chan_app_slot_done(&ar, 0, 77))
        FIRST("late claim: %d", rc);
    /* The table is full of live arenas: a third is refused, and the others live on. */
    struct jr_arena_app other, third;
    jr_arena_app_create(&other, SLOTS, RX_CAP, TX_CAP);
    jr_arena_app_create(&third, SLOTS, RX_CAP, TX_CAP);
    int r1 = jr_chan_svc_claim(&as, &good, sizeof good, ar.fd, 1, NULL, &s1);
    int r2 = jr_chan_svc_claim(&as, &good, sizeof good, other.fd, 1, NULL, &s2);
    int r3 = jr_chan_svc_claim(&as, &good, sizeof good, third.fd, 1, NULL, &s);
    if (r1 != 0 || r2 != 0 || r3 != -ENOSPC || as.mapped != 2)
        FIRST("full table: %d %d %d", r1, r2, r3);
    /* ... and answered all the same, in the third arena's slot. */
    struct jr_chan_app v3;
    if (jr_chan_app_verdict(&third, 0, good.claim_id, &v3) != 0)
        FIRST("a refusal for want of room is answered");
    /* ... nor once the service has it mapped (a read-only descriptor proves nothing). */
    struct jr_chan_claim other_slot = good;
    other_slot.offset = 2 * (uint64_t)ar.slot_bytes;
    if (jr_chan_svc_claim(&as, &other_slot, sizeof other_slot, ro, 1, NULL, &s) != -EPERM)
        FIRST("read-only descriptor of a mapped arena");
    /* A mapped arena's grid is fixed by its first claim: other capacities are refused. */
    struct jr_chan_claim wider = good;
    wider.rx_cap = RX_CAP * 2;
    wider.offset = ar.slot_bytes;
    if (jr_chan_svc_claim(&as, &wider, sizeof wider, ar.fd, 1, NULL, &s) != -EINVAL)
        FIRST("capacities off the arena's grid");
    /* ... until one is idle: then it makes room. */
    jr_chan_svc_release(&as, &s2);
    r3 = jr_chan_svc_claim(&as, &good, sizeof good, third.fd, 1, NULL, &s);
    if (r3 != 0 || as.mapped != 2)
        FIRST("idle arena evicted: %d", r3);
    jr_chan_svc_release(&as, &s);
    jr_chan_svc_release(&as, &s1);
    close(loose), close(devnull), close(ro);
    jr_arena_app_destroy(&tiny);
    jr_arena_app_destroy(&other);
    jr_arena_app_destroy(&third);
    jr_arenas_free(&as);
    if (open_fds() != before)
        FIRST("descriptors leaked: %d, were %d", open_fds(), before);
    verdict("refusals", ok, why);
    jr_arena_app_destroy(&ar);
}

/* jr_chan_svc_recv keeps one descriptor and closes the rest, and the claim's bytes
 * are a message of their own. */
static void case_recv(void)
{
    int sv[2];
    pair(sv);
    int before = open_fds();
    int fds[3] = {open("/dev/null", O_RDONLY | O_CLOEXEC), open("/dev/null", O_RDONLY | O_CLOEXEC),
                  open("/dev/null", O_RDONLY | O_CLOEXEC)};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof fds)];
    } ctl;
    char byte = 'x';
    struct iovec iov = {&byte, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(h), fds, sizeof fds);
    sendmsg(sv[1], &m, 0);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    char got[8];
    struct iovec in = {got, sizeof got};
    int fd;
    ssize_t n = jr_chan_svc_recv(sv[0], &in, 1, &fd);
    int ok = n == 1 && got[0] == 'x' && fd >= 0 && open_fds() == before + 1;
    if (fd >= 0)
        close(fd);
    ok = ok && open_fds() == before;
    n = jr_chan_svc_recv(sv[0], &in, 1, &fd);
    ok = ok && n == -EAGAIN && fd == -1;
    verdict("recv", ok, "descriptors kept or leaked");
    close(sv[0]), close(sv[1]);
}

/* Two processes: the application sleeps on its verdict (futex) until the service
 * decides, then the two move bytes through the rings, with tokens on the socket. */
struct app_io {
    int fd;
};

static int io_drain(void *ctx)
{
    char buf[256];
    ssize_t r = recv(((struct app_io *)ctx)->fd, buf, sizeof buf, MSG_DONTWAIT);
    return r < 0 ? -errno : (int)r;
}

static int io_bell(void *ctx)
{
    char b = 'B';
    return send(((struct app_io *)ctx)->fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1 ||
                   errno == EAGAIN
               ? 0
               : -errno;
}

static int io_fill(void *ctx)
{
    return jr_chan_fill_burst(sendto, ((struct app_io *)ctx)->fd);
}

static int io_wait(void *ctx, short what)
{
    struct pollfd p = {.fd = ((struct app_io *)ctx)->fd, .events = what};
    return poll(&p, 1, 5000) < 0 ? -errno : 0;
}

static void case_two_processes(void)
{
    struct jr_arena_app ar;
    jr_arena_app_create(&ar, SLOTS, RX_CAP, TX_CAP);
    int sv[2];
    pair(sv);
    pid_t child = fork();
    if (child == 0) { /* the application */
        close(sv[0]);
        jr_chan_app_claim(sv[1], &ar, 2, 41, 0);
        struct jr_chan_app v;
        int got = jr_chan_app_wait_verdict(&ar, 2, 41, &v, 5000);
        if (got != 1)
            _exit(10);
        struct app_io ctx = {sv[1]};
        struct jr_chan_io io = {io_drain, io_bell, io_fill, io_wait, &ctx, NULL, NULL, NULL, NULL};
        char buf[64];
        ssize_t n = jr_chan_read(&v, &io, buf, sizeof buf, 1);
        if (n != 5 || memcmp(buf, "hello", 5) != 0)
            _exit(11);
        if (jr_chan_write(&v, &io, "olleh", 5, 1) != 5)
            _exit(12);
        jr_chan_shutdown_write(&v, &io);
        _exit(0);
    }
    close(sv[1]);
    /* The service decides late: the application is asleep on the verdict by then. */
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    struct jr_arenas as;
    jr_arenas_init(&as, 4);
    struct jr_chan_svc s;
    struct pollfd p = {.fd = sv[0], .events = POLLIN};
    poll(&p, 1, 5000);
    int rc = service_takes(&as, sv[0], 1, &s);
    int ok = rc == 0 && jr_chan_svc_deliver(&s, sv[0], "hello", 5) == 5;
    char back[8] = {0};
    uint32_t have = 0;
    for (int rounds = 0; ok && rounds < 1000 && !(have == 5 && jr_chan_svc_tx_eof(&s)); rounds++) {
        int64_t k = jr_chan_svc_collect(&s, sv[0], back + have, (uint32_t)(sizeof back - have));
        if (k < 0)
            ok = 0;
        else
            have += (uint32_t)k;
        if (have == 5 && jr_chan_svc_tx_eof(&s))
            break;
        if (jr_chan_svc_idle(&s, sv[0], JR_CHAN_WAIT_BYTES) == 1)
            poll(&p, 1, 5000);
    }
    int status = 0;
    waitpid(child, &status, 0);
    ok = ok && have == 5 && memcmp(back, "olleh", 5) == 0 && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
    jr_chan_svc_release(&as, &s);
    ok = ok && jr_chan_app_slot_done(&ar, 2, 41);
    char why[64];
    snprintf(why, sizeof why, "claim %d, child status %d", rc, status);
    verdict("two_processes", ok, why);
    jr_arenas_free(&as);
    jr_arena_app_destroy(&ar);
    close(sv[0]);
}

/* A verdict that never comes: the wait ends at its deadline. */
static void case_wait_times_out(void)
{
    struct jr_arena_app ar;
    jr_arena_app_create(&ar, 1, RX_CAP, TX_CAP);
    int sv[2];
    pair(sv);
    jr_chan_app_claim(sv[1], &ar, 0, 3, 0);
    struct jr_chan_app v;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = jr_chan_app_wait_verdict(&ar, 0, 3, &v, 30);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    verdict("wait_times_out", rc == -EAGAIN && ms >= 29, "the wait did not last its time");
    jr_arena_app_destroy(&ar);
    close(sv[0]), close(sv[1]);
}

/* A JR_CLAIM_BELL claim: refused (answered in the slot) without the process's bell;
 * with it, accepted, and the rx tokens go to the bell, never to the socket: the eventfd
 * is written only while the application is armed, a full queue counts as lost (the
 * arm then says "look"), and the token count stays 0. */
static void case_bell(void)
{
    int ok = 1;
    char why[256] = "";
    struct jr_arenas as;
    struct jr_arena_app ar;
    jr_arenas_init(&as, 2);
    jr_arena_app_create(&ar, SLOTS, RX_CAP, TX_CAP);
    int sv[2];
    pair(sv);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct jr_bell *bell = calloc(1, sizeof *bell + 2 * sizeof(uint32_t));
    struct stat st;
    fstat(ar.fd, &st);
    *bell = (struct jr_bell){.cap = 2, .efd = efd, .arena_dev = st.st_dev,
                             .arena_ino = st.st_ino};
    struct jr_chan_svc s = {.arena = -1};
    struct jr_chan_app v;
    struct jr_chan_claim cl = {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 9, RX_CAP, TX_CAP,
                               JR_CLAIM_BELL, 0};
    int rc = jr_chan_svc_claim(&as, &cl, sizeof cl, ar.fd, 1, NULL, &s);
    if (rc != -EALREADY || jr_chan_app_verdict(&ar, 0, 9, &v) != 0)
        FIRST("a bell claim without the bell: %d", rc);
    /* Another arena's bell claim (a forked child's, say): refused, answered there. */
    struct jr_arena_app other;
    jr_arena_app_create(&other, SLOTS, RX_CAP, TX_CAP);
    cl.claim_id = 11;
    rc = jr_chan_svc_claim(&as, &cl, sizeof cl, other.fd, 1, bell, &s);
    if (rc != -EALREADY || jr_chan_app_verdict(&other, 0, 11, &v) != 0)
        FIRST("a bell claim from another arena: %d", rc);
    cl.claim_id = 10;
    cl.offset = ar.slot_bytes; /* slot 1 */
    if (jr_claim_slot(&cl) != 1)
        FIRST("jr_claim_slot: %llu", (unsigned long long)jr_claim_slot(&cl));
    rc = jr_chan_svc_claim(&as, &cl, sizeof cl, ar.fd, 1, bell, &s);
    if (rc != 0 || s.bell != bell || jr_chan_app_verdict(&ar, 1, 10, &v) != 1)
        FIRST("a bell claim with the bell: %d", rc);
    uint64_t count = 0;
    uint32_t got[4];
    /* The channel starts armed; the application is not (busy): no eventfd write. */
    if (ok && jr_chan_svc_deliver(&s, sv[0], "ab", 2) != 2)
        FIRST("deliver");
    if (ok && (read(efd, &count, sizeof count) != -1 || errno != EAGAIN))
        FIRST("eventfd written while the application was not armed");
    if (ok && (jr_bell_take(bell, got, 4) != 1 || got[0] != 1))
        FIRST("the slot was not pushed");
    char junk[8];
    if (ok && recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) != -1)
        FIRST("a token reached the socket");
    if (ok && v.shm->tokens_sent != 0)
        FIRST("a bell token was counted as a socket token");
    /* Armed with nothing queued: the next push writes the eventfd, once. */
    char buf[8];
    jr_ring_copy_out(v.rx_data, v.rx_cap, v.shm->rx.head, buf, 2);
    JR_STORE(&v.shm->rx.head, v.shm->rx.head + 2);
    __atomic_store_n(&v.shm->rx_armed, 1, __ATOMIC_RELAXED);
    if (ok && jr_bell_arm(bell, 0) != 0)
        FIRST("arm found work in an empty queue");
    jr_chan_svc_deliver(&s, sv[0], "c", 1);
    if (ok && (read(efd, &count, sizeof count) != 8 || count != 1))
        FIRST("the armed application was not woken");
    /* Three pushes into a queue of two: one lost, and the arm says look. */
    jr_bell_ring(bell, 1);
    jr_bell_ring(bell, 1);
    if (ok && (bell->tail - bell->head != 2 || bell->lost != 1 || jr_bell_arm(bell, 0) != 1))
        FIRST("a full queue: %u queued, %u lost", bell->tail - bell->head, bell->lost);
    if (ok && (jr_bell_take(bell, got, 4) != 2 || jr_bell_arm(bell, 1) != 0))
        FIRST("after the take and the lost count seen, the arm should sleep");
    /* The door: the application shuts down writing and rings while the service is
     * awake (the door not armed: no eventfd write); the service's arm, about to sleep,
     * must find tx_eof itself (review finding: it looked only at tx's bytes). */
    struct jr_door door = {.armed = 0, .efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
    s.door = &door;
    JR_STORE(&v.shm->tx_eof, 1);
    JR_FENCE();
    jr_door_ring(&door);
    if (ok && (read(door.efd, &count, sizeof count) != -1 || errno != EAGAIN))
        FIRST("an unarmed door was written");
    rc = jr_chan_svc_arm(&s, sv[0], JR_CHAN_WAIT_BYTES);
    if (ok && rc != 0)
        FIRST("the arm slept past tx_eof: %d", rc);
    /* Armed (it did arm the door first): a ring now writes the eventfd, once. */
    jr_door_ring(&door);
    jr_door_ring(&door);
    if (ok && (read(door.efd, &count, sizeof count) != 8 || count != 1))
        FIRST("the armed door was not written once");
    close(door.efd);
    s.door = NULL;
    jr_chan_svc_release(&as, &s);
    jr_arenas_free(&as);
    jr_arena_app_destroy(&ar);
    jr_arena_app_destroy(&other);
    close(sv[0]), close(sv[1]), close(efd);
    free(bell);
    verdict("bell", ok, why);
}

/* The arena's bell (service mode): a bell arm makes the put push the slot on the
 * arena's queue instead of sending a token; the door is written only while the
 * application is armed, and once; a token arm still gets its token; a queue whose head
 * the application made up counts pushes as lost (never writes out of bounds); without
 * a door the bell arm falls back to a token. */
/* A service's table, an application's arena with a door, and a connection. */
static void door_bed(struct jr_arenas *as, struct jr_arena_app *ar, int sv[2])
{
    jr_arenas_init(as, 2);
    jr_arena_app_create(ar, SLOTS, RX_CAP, TX_CAP);
    jr_arena_app_door(ar);
    pair(sv);
}

static void case_arena_bell(void)
{
    int ok = 1;
    char why[256] = "";
    struct jr_arenas as;
    struct jr_arena_app ar;
    int sv[2];
    door_bed(&as, &ar, sv);
    struct jr_chan_svc s = {.arena = -1};
    struct jr_chan_app v;
    struct jr_chan_claim cl = {JR_CLAIM_MAGIC, JR_CLAIM_VERSION, 7, RX_CAP, TX_CAP,
                               JR_CLAIM_DOOR, ar.slot_bytes};
    int rc = jr_chan_svc_claim(&as, &cl, sizeof cl, ar.fd, 1, NULL, &s);
    if (rc != 0 || jr_chan_app_verdict(&ar, 1, 7, &v) != 1 || s.wake == NULL)
        FIRST("claim: %d", rc);
    /* Without the door yet: a bell arm is answered with a token. */
    char junk[64];
    __atomic_store_n(&v.shm->rx_armed, JR_RX_ARM_BELL, __ATOMIC_RELAXED);
    if (ok && jr_chan_svc_deliver(&s, sv[0], "a", 1) != 1)
        FIRST("deliver");
    if (ok && recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) != 1)
        FIRST("no door: the bell arm got no token");
    int door = dup(ar.door_peer);
    if (ok && !jr_arena_take_door(&as, s.arena, door, -1, 0))
        FIRST("the door was not taken");
    struct jr_arena_bell *b = &jr_arena_app_chan(&ar, 0)->arena_bell;
    uint32_t got[8];
    /* The service says it holds the door: the application's next claim leaves it out. */
    int cs[2];
    pair(cs);
    uint8_t msg[64];
    struct iovec iov = {msg, sizeof msg};
    int fd2 = -1, door2 = -1;
    if (ok && !JR_LOAD(&b->door_held))
        FIRST("door_held was not set when the door was taken");
    if (ok && (jr_chan_app_claim(cs[1], &ar, 2, 99, 0) != 0 ||
               jr_chan_svc_recv2(cs[0], &iov, 1, &fd2, &door2) != (ssize_t)sizeof cl ||
               fd2 < 0 || door2 != -1 || jr_claim_has_door(msg, sizeof cl)))
        FIRST("a claim sent the door the service holds (fd %d, door %d)", fd2, door2);
    if (fd2 >= 0)
        close(fd2);
    if (door2 >= 0)
        close(door2);
    close(cs[0]), close(cs[1]);
    /* Bell-armed, the application awake: the slot is pushed, no token, no door. */
    __atomic_store_n(&v.shm->rx_armed, JR_RX_ARM_BELL, __ATOMIC_RELAXED);
    jr_chan_svc_deliver(&s, sv[0], "b", 1);
    if (ok && recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) != -1)
        FIRST("a token reached the socket for a bell arm");
    if (ok && recv(ar.door, junk, sizeof junk, MSG_DONTWAIT) != -1)
        FIRST("the door was written while the application was awake");
    if (ok && (jr_arena_bell_take(b, got, 8) != 1 || got[0] != 1))
        FIRST("the slot was not pushed");
    /* Not armed at all (bytes already announced): nothing. */
    jr_chan_svc_deliver(&s, sv[0], "c", 1);
    if (ok && (jr_arena_bell_take(b, got, 8) != 0 ||
               recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) != -1))
        FIRST("an unarmed channel was announced");
    /* The application sleeps: the push writes the door, once. */
    if (ok && jr_arena_bell_arm(b, 0) != 0)
        FIRST("arm found work in an empty queue");
    __atomic_store_n(&v.shm->rx_armed, JR_RX_ARM_BELL | JR_RX_ARM_TOKEN, __ATOMIC_RELAXED);
    jr_chan_svc_deliver(&s, sv[0], "d", 1);
    if (ok && recv(ar.door, junk, sizeof junk, MSG_DONTWAIT) != 1)
        FIRST("the sleeping application's door was not written");
    if (ok && recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) != 1)
        FIRST("both arms: the token arm got no token");
    __atomic_store_n(&v.shm->rx_armed, JR_RX_ARM_BELL, __ATOMIC_RELAXED);
    jr_chan_svc_deliver(&s, sv[0], "e", 1);
    if (ok && recv(ar.door, junk, sizeof junk, MSG_DONTWAIT) != -1)
        FIRST("the door was written twice for one arm");
    if (ok && (jr_arena_bell_take(b, got, 8) != 2 || got[0] != 1 || got[1] != 1))
        FIRST("the pushes were not queued");
    if (ok && (as.bell_counts.pushes != 3 || as.bell_counts.wakes != 1))
        FIRST("counts: %llu pushes, %llu wakes", (unsigned long long)as.bell_counts.pushes,
              (unsigned long long)as.bell_counts.wakes);
    /* A made-up head: the queue looks full, pushes count as lost, ids stay in bounds. */
    uint32_t lost = b->lost;
    b->head = b->tail + 12345;
    __atomic_store_n(&v.shm->rx_armed, JR_RX_ARM_BELL, __ATOMIC_RELAXED);
    jr_chan_svc_deliver(&s, sv[0], "f", 1);
    if (ok && b->lost != lost + 1)
        FIRST("a hostile head: lost %u, was %u", b->lost, lost);
    if (ok && jr_arena_bell_arm(b, lost) != 1)
        FIRST("a lost push must make the arm say look");
    /* A value the application made up wants a token, never nothing. */
    __atomic_store_n(&v.shm->rx_armed, 0x40, __ATOMIC_RELAXED);
    jr_chan_svc_deliver(&s, sv[0], "g", 1);
    if (ok && recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) != 1)
        FIRST("a made-up arm got no token");
    jr_chan_svc_release(&as, &s);
    if (ok && s.wake != NULL)
        FIRST("release kept the wake pointer");
    jr_arenas_free(&as);
    if (ok && JR_LOAD(&b->door_held))
        FIRST("the service let the door go but door_held stayed set");
    jr_arena_app_destroy(&ar);
    close(sv[0]), close(sv[1]);
    verdict("arena_bell", ok, why);
}

/* A bell birth (chan.h, birth_arm): asked before the service lays the channel out, the
 * channel is born armed for the bell, and its first bytes push the slot instead of
 * sending a token; pinned for a token first (a wait through the kernel), or asked too
 * late, it is born token-armed, and an ask after a pin is not taken; made sure of a
 * token after a bell birth whose first bytes rang only the bell, a token is armed and
 * the caller is told to look (1). A new claim starts with nothing asked. */
static void case_birth(void)
{
    int ok = 1;
    char why[256] = "";
    struct jr_arenas as;
    struct jr_arena_app ar;
    int sv[2];
    door_bed(&as, &ar, sv);
    char junk[64];
    struct jr_chan_app v;
    struct jr_arena_bell *b = &jr_arena_app_chan(&ar, 0)->arena_bell;
    uint32_t got[8];
    for (uint32_t slot = 0; slot < 4; slot++) {
        /* 0: asked in time; 1: pinned, then asked (not taken); 2: asked after the birth
         * (too late); 3: asked, born for the bell, a put, then a token made sure of. */
        struct jr_chan *c = jr_arena_app_chan(&ar, slot);
        __atomic_store_n(&c->birth_arm, JR_BIRTH_BORN | JR_RX_ARM_BELL, __ATOMIC_RELAXED);
        int cs[2];
        pair(cs);
        uint8_t msg[64];
        struct iovec iov = {msg, sizeof msg};
        int fd = -1, door = -1;
        uint32_t id = 40 + slot;
        if (ok && (jr_chan_app_claim(cs[1], &ar, slot, id, 0) != 0 ||
                   jr_chan_svc_recv2(cs[0], &iov, 1, &fd, &door) != (ssize_t)sizeof(struct jr_chan_claim)))
            FIRST("slot %u: the claim", slot);
        if (ok && JR_LOAD(&c->birth_arm) != 0)
            FIRST("slot %u: a claim kept the last use's birth_arm", slot);
        if (slot == 1 && ok && jr_chan_birth_token(c) != 0)
            FIRST("slot 1: a pin before the birth said look");
        if (slot != 2)
            jr_chan_birth_ask(c);
        struct jr_chan_svc s = {.arena = -1};
        if (ok && jr_chan_svc_claim(&as, msg, sizeof(struct jr_chan_claim), fd, 1, NULL, &s) != 0)
            FIRST("slot %u: the claim was refused", slot);
        if (ok && door >= 0 && !jr_arena_take_door(&as, s.arena, door, -1, 0))
            FIRST("slot %u: the door was not taken", slot);
        door = -1;
        if (fd >= 0)
            close(fd);
        int bell = slot == 0 || slot == 3;
        uint32_t arm = bell ? JR_RX_ARM_BELL : JR_RX_ARM_TOKEN;
        if (ok && (s.born_bell != bell || JR_LOAD(&c->rx_armed) != arm ||
                   JR_LOAD(&c->birth_arm) != (JR_BIRTH_BORN | arm)))
            FIRST("slot %u: born %u, armed %u, birth_arm %#x", slot, s.born_bell,
                  JR_LOAD(&c->rx_armed), JR_LOAD(&c->birth_arm));
        if (slot == 2) {
            jr_chan_birth_ask(c);
            if (ok && JR_LOAD(&c->birth_arm) != (JR_BIRTH_BORN | JR_RX_ARM_TOKEN))
                FIRST("slot 2: an ask after the birth was taken");
        }
        if (ok && (jr_chan_app_verdict(&ar, slot, id, &v) != 1 ||
                   jr_chan_svc_deliver(&s, sv[0], "x", 1) != 1))
            FIRST("slot %u: verdict or deliver", slot);
        ssize_t token = recv(sv[1], junk, sizeof junk, MSG_DONTWAIT);
        uint32_t pushed = jr_arena_bell_take(b, got, 8);
        if (ok && ((token == 1) == bell || (pushed == 1) != bell ||
                   (pushed == 1 && got[0] != slot)))
            FIRST("slot %u: token %zd, pushed %u", slot, token, pushed);
        if (slot == 3) {
            /* The put rang only the bell: the caller must look, and rx has the byte. */
            if (ok && (jr_chan_birth_token(c) != 1 || jr_chan_app_rx_avail(&v) != 1 ||
                       !(JR_LOAD(&c->rx_armed) & JR_RX_ARM_TOKEN)))
                FIRST("slot 3: a token made sure of after a bell birth");
            __atomic_fetch_or(&c->rx_armed, JR_RX_ARM_BELL, __ATOMIC_SEQ_CST);
            jr_chan_svc_deliver(&s, sv[0], "y", 1);
            if (ok && (recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) != 1 ||
                       jr_arena_bell_take(b, got, 8) != 1))
                FIRST("slot 3: both arms: a token and a push");
        }
        jr_chan_svc_release(&as, &s);
        close(cs[0]), close(cs[1]);
    }
    jr_arenas_free(&as);
    jr_arena_app_destroy(&ar);
    close(sv[0]), close(sv[1]);
    verdict("birth", ok, why);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0); /* a crash keeps the cases before it */
    case_accept_release();
    case_busy_slot();
    case_refusals();
    case_recv();
    case_two_processes();
    case_wait_times_out();
    case_bell();
    case_arena_bell();
    case_birth();
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
