/* One data-plane worker per rx queue (dataplane.h, "Workers"; the why is
 * docs/dataplane.md, "Workers: one plane per queue").
 *
 * Each worker is a thread that runs one plane's loop (dp_run) while the control plane
 * lets it, and parks when asked to or when its loop returns with work for Python. The
 * hand-over is a futex word per worker, written by both sides:
 *
 *   control plane   PARKED -> RUN (dp_workers_run lets it go), PARKED -> STOP (free)
 *   worker          RUN -> PARKED (its loop returned and it will not touch the plane)
 *
 * Ordering: the worker's writes to its plane (and `woke`, the counters) happen before
 * its release store of PARKED; the control plane's acquire load that sees PARKED makes
 * them visible, and from then on only the control plane touches the plane. The control
 * plane's writes happen before its release store of RUN, which the worker's acquire
 * load sees before it enters dp_run again. `pause` is only a hint that says whether a
 * loop that returned for no reason of its own (a signal's EINTR) should run on or park:
 * the eventfd write that follows it is what ends the loop's sleep.
 *
 * No Python runs in a worker: the threads are plain pthreads, and dp_workers_run holds
 * no GIL (cffi releases it around the call). */

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { W_PARKED = 0, W_RUN = 1, W_STOP = 2 };

struct worker {
    struct dp *dp;
    struct dp_workers *group;
    pthread_t thread;
    int pause_fd;   /* eventfd the plane's loop watches: readable = return and park */
    uint32_t state; /* W_*: the futex word */
    uint32_t pause; /* the control plane wants it parked (see the header comment) */
    int woke;       /* dp_run's result when it last returned */
    uint64_t runs;  /* times its loop was let run */
    uint64_t asks;  /* ... and returned with work for Python */
    int started;
};

struct dp_workers {
    uint32_t n;
    int notify_fd; /* eventfd: a worker's loop returned with work for Python */
    int epfd;      /* the control plane's sleep: notify_fd and the watched descriptor */
    int watch_fd;
    struct dp **planes; /* the workers' planes, in order (dp_forward_declined) */
    struct worker w[];
};

static void futex_wait(uint32_t *word, uint32_t expected)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void eventfd_drain(int fd)
{
    uint64_t count;

    (void)!read(fd, &count, sizeof(count));
}

static void eventfd_ring(int fd)
{
    uint64_t one = 1;

    (void)!write(fd, &one, sizeof(one));
}

static void *worker_main(void *arg)
{
    struct worker *k = arg;
    sigset_t mask;

    /* Signals are the control plane's (Python runs its handlers in the main thread);
     * faults a worker itself raises must still end the process where they happen. */
    sigfillset(&mask);
    sigdelset(&mask, SIGSEGV);
    sigdelset(&mask, SIGBUS);
    sigdelset(&mask, SIGILL);
    sigdelset(&mask, SIGFPE);
    sigdelset(&mask, SIGABRT);
    sigdelset(&mask, SIGTRAP);
    sigdelset(&mask, SIGSYS);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    for (;;) {
        uint32_t state;
        while ((state = __atomic_load_n(&k->state, __ATOMIC_ACQUIRE)) == W_PARKED)
            futex_wait(&k->state, W_PARKED);
        if (state == W_STOP)
            return NULL;
        int rc = dp_run(k->dp, -1);
        k->runs++;
        /* DP_WAKE_DOOR: a pump of Python's sleeps on a door this worker watches. */
        int asks = rc < 0 ||
                   (rc & (DP_WAKE_DECLINED | DP_WAKE_HANDBACK | DP_WAKE_SESSION | DP_WAKE_DOOR));
        if (!asks && !__atomic_load_n(&k->pause, __ATOMIC_ACQUIRE))
            continue; /* returned for nothing (EINTR): nobody would wake it, run on */
        k->woke = rc;
        if (asks) {
            k->asks++;
            eventfd_ring(k->group->notify_fd);
        }
        /* Barrier: everything this loop wrote to the plane before the control plane
         * may touch it (its acquire load in dp_workers_run). */
        __atomic_store_n(&k->state, W_PARKED, __ATOMIC_RELEASE);
        futex_wake(&k->state);
    }
}

static void stop_workers(struct dp_workers *g)
{
    for (uint32_t i = 0; i < g->n; i++) {
        struct worker *k = &g->w[i];
        if (!k->started)
            continue;
        __atomic_store_n(&k->state, W_STOP, __ATOMIC_RELEASE);
        futex_wake(&k->state);
        pthread_join(k->thread, NULL);
        k->started = 0;
    }
}

void dp_workers_free(struct dp_workers *g)
{
    if (g == NULL)
        return;
    stop_workers(g);
    for (uint32_t i = 0; i < g->n; i++)
        if (g->w[i].pause_fd >= 0)
            close(g->w[i].pause_fd);
    if (g->notify_fd >= 0)
        close(g->notify_fd);
    if (g->epfd >= 0)
        close(g->epfd);
    free(g->planes);
    free(g);
}

struct dp_workers *dp_workers_new(struct dp *const *planes, uint32_t n)
{
    struct dp_workers *g;
    struct epoll_event ev = {.events = EPOLLIN};
    int err = EINVAL;

    if (planes == NULL || n == 0 || n > DP_MAX_WORKERS) {
        errno = EINVAL;
        return NULL;
    }
    g = calloc(1, sizeof(*g) + n * sizeof(g->w[0]));
    if (g == NULL)
        return NULL;
    g->n = n;
    g->watch_fd = -1;
    g->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    g->planes = calloc(n, sizeof(*g->planes));
    for (uint32_t i = 0; i < n; i++)
        g->w[i].pause_fd = -1;
    if (g->notify_fd < 0 || g->epfd < 0 || g->planes == NULL)
        goto fail_errno;
    int shared = dp_share_channels(planes, n); /* before any thread runs a plane */
    if (shared < 0) {
        err = -shared;
        goto fail;
    }
    ev.data.fd = g->notify_fd;
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->notify_fd, &ev) < 0)
        goto fail_errno;
    for (uint32_t i = 0; i < n; i++) {
        struct worker *k = &g->w[i];
        k->dp = planes[i];
        g->planes[i] = planes[i];
        k->group = g;
        k->state = W_PARKED;
        k->pause_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (k->pause_fd < 0)
            goto fail_errno;
        int rc = dp_watch_fd(k->dp, k->pause_fd);
        if (rc < 0) {
            err = -rc;
            goto fail;
        }
        rc = pthread_create(&k->thread, NULL, worker_main, k);
        if (rc != 0) {
            err = rc;
            goto fail;
        }
        k->started = 1;
    }
    return g;
fail_errno:
    err = errno;
fail:
    dp_workers_free(g);
    errno = err;
    return NULL;
}

int dp_workers_watch(struct dp_workers *g, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};

    if (g->watch_fd >= 0)
        return -EBUSY;
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    g->watch_fd = fd;
    return 0;
}

int dp_workers_run(struct dp_workers *g, int timeout_ms)
{
    struct epoll_event evs[2];
    int watched = 0, err = 0, woke = 0;

    for (uint32_t i = 0; i < g->n; i++) {
        struct worker *k = &g->w[i];
        __atomic_store_n(&k->pause, 0, __ATOMIC_RELAXED);
        /* Barrier: the control plane's writes to the plane before the worker's loop. */
        __atomic_store_n(&k->state, W_RUN, __ATOMIC_RELEASE);
        futex_wake(&k->state);
    }
    int nev = epoll_wait(g->epfd, evs, 2, timeout_ms);
    if (nev < 0 && errno != EINTR)
        err = -errno;
    for (int i = 0; i < nev; i++)
        watched |= evs[i].data.fd == g->watch_fd;
    /* Park every worker: the hint, then the eventfd its loop watches (it ends the
     * round it is in and returns), then wait until it says it has parked. */
    for (uint32_t i = 0; i < g->n; i++) {
        __atomic_store_n(&g->w[i].pause, 1, __ATOMIC_RELEASE);
        eventfd_ring(g->w[i].pause_fd);
    }
    for (uint32_t i = 0; i < g->n; i++) {
        struct worker *k = &g->w[i];
        uint32_t state;
        while ((state = __atomic_load_n(&k->state, __ATOMIC_ACQUIRE)) != W_PARKED)
            futex_wait(&k->state, state);
        eventfd_drain(k->pause_fd); /* served: the next run starts without it */
        if (k->woke < 0 && err == 0)
            err = k->woke;
        else if (k->woke > 0)
            woke |= k->woke & ~(DP_WAKE_WATCHED | DP_WAKE_TIMEOUT);
    }
    eventfd_drain(g->notify_fd);
    /* Every plane is at rest: a segment one worker declined for a flow another holds
     * half-open goes to that worker, not to Python (dataplane.h). */
    if (g->n > 1)
        for (uint32_t i = 0; i < g->n; i++)
            dp_forward_declined(g->planes[i], g->planes, g->n);
    if (err)
        return err;
    if (watched)
        woke |= DP_WAKE_WATCHED;
    return woke ? woke : DP_WAKE_TIMEOUT;
}

int dp_workers_stats(const struct dp_workers *g, uint32_t i, struct dp_worker_stats *out)
{
    if (i >= g->n)
        return -EINVAL;
    out->runs = g->w[i].runs;
    out->asks = g->w[i].asks;
    return 0;
}
