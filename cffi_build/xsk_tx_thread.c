/* Copy-mode transmit on a helper thread (one per socket that asks for it).
 *
 * In copy mode the kernel transmits inside sendto(): it copies each frame into an skb
 * and hands it to the device, and on a veth pair that runs the receiver's whole input
 * path (IP, TCP, waking the reading process) inline, in the sender's time. For a
 * single-threaded engine that is most of the kernel's share of every reply, on the
 * CPU the engine needs for the next batch. A native-driver NIC does this work in its
 * own NAPI context; this thread is the equivalent for copy mode: the engine queues
 * frames on the tx ring and, for a batch worth it, wakes the thread instead of calling
 * sendto() itself. The thread drains the ring and sleeps on an eventfd.
 *
 * Small batches (fewer than min_batch frames) are still kicked by the caller while the
 * thread sleeps: a lone reply would otherwise wait for a thread wake-up, which costs
 * more latency than the sendto() it saves.
 *
 * Synchronisation is the ring itself plus one flag. The engine publishes frames with
 * the tx producer's release store, then (full fence) reads `sleeping`; the thread sets
 * `sleeping`, then (full fence) rereads the producer before it blocks. Either the
 * engine sees the thread asleep and wakes it, or the thread sees the frames: no
 * wake-up is lost. The thread touches no Python object and never holds the GIL.
 *
 * The other way, the thread tells a caller whose send found the ring full when it has
 * transmitted since (xsk_tx_want_room): the equivalent of a NIC's tx-completion
 * interrupt, so that the caller can sleep in epoll on an eventfd instead of polling the
 * tx ring's socket, which in copy mode transmits under the lock this thread holds
 * (xsk.h, separate_tx). The caller sets `room_wanted`, then (full fence) compares the
 * consumer with the one its failed send saw; the thread moves the consumer (inside
 * sendto), then exchanges `room_wanted` for 0 (a full barrier) and, if it was set,
 * writes the eventfd. Either the caller sees the progress or the thread sees the flag.
 */

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "xsk_internal.h"

struct xsk_tx_thread {
    struct xsk_sock *s;
    pthread_t thread;
    int efd;
    uint32_t min_batch;
    unsigned forks; /* fork_count when started: a forked child has no thread */
    int sleeping;   /* atomic: the thread is (about to be) blocked on efd */
    int stop;       /* atomic: set once, by xsk_tx_thread_stop or the thread's exit */
    int room_efd;   /* readable: the ring moved since a caller asked (room_wanted) */
    int room_wanted; /* atomic: a caller waits on room_efd */
};

/* After the consumer moved: tell a caller that waits for room. */
static void tell_room(struct xsk_tx_thread *t)
{
    if (__atomic_exchange_n(&t->room_wanted, 0, __ATOMIC_SEQ_CST)) {
        uint64_t one = 1;
        if (write(t->room_efd, &one, sizeof(one)) < 0) {
            /* Only a counter at its maximum fails, and it is readable then anyway. */
        }
    }
}

/* Bumped in every child process (pthread_atfork): a thread started before the last
 * fork belongs to another process. Cheaper than getpid() on every kick. */
static unsigned fork_count;
static pthread_once_t fork_hook_once = PTHREAD_ONCE_INIT;

static void note_fork_in_child(void) { fork_count++; }
static void install_fork_hook(void) { pthread_atfork(NULL, NULL, note_fork_in_child); }

static int tx_thread_ours(const struct xsk_tx_thread *t) { return t->forks == fork_count; }

static int tx_thread_pending(struct xsk_sock *s, uint32_t prod)
{
    return tx_wakeup_wanted(s) && prod != ring_load_acquire(s->tx.consumer);
}

static void *tx_thread_main(void *arg)
{
    struct xsk_tx_thread *t = arg;
    struct xsk_sock *s = t->s;
    while (!__atomic_load_n(&t->stop, __ATOMIC_SEQ_CST)) {
        uint32_t prod = ring_load_acquire(s->tx.producer);
        if (tx_thread_pending(s, prod)) {
            uint32_t before = ring_load_acquire(s->tx.consumer);
            xsk_kick_rounds(s, prod, &s->st.tx_thread_kicks, &s->st.tx_thread_errors);
            /* No progress is back-pressure (EBUSY, ENOBUFS) or an error: sleep until
             * the engine queues more instead of spinning on it. */
            if (ring_load_acquire(s->tx.consumer) != before) {
                tell_room(t);
                continue;
            }
        }
        __atomic_store_n(&t->sleeping, 1, __ATOMIC_SEQ_CST);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        uint32_t again = ring_load_acquire(s->tx.producer);
        if (again != prod && tx_thread_pending(s, again)) {
            __atomic_store_n(&t->sleeping, 0, __ATOMIC_SEQ_CST);
            continue;
        }
        uint64_t count;
        if (read(t->efd, &count, sizeof(count)) < 0 && errno != EINTR && errno != EAGAIN)
            break;
        __atomic_store_n(&t->sleeping, 0, __ATOMIC_SEQ_CST);
    }
    /* Stopped, or the eventfd is unusable: from here every kick is the caller's. A
     * caller that waits for room must not wait for this thread: wake it. */
    __atomic_store_n(&t->stop, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&t->room_wanted, 1, __ATOMIC_SEQ_CST);
    tell_room(t);
    return NULL;
}

/* xsk_kick while a thread runs: hand the ring to it, or kick here for a small batch. */
int xsk_tx_thread_kick(struct xsk_sock *s)
{
    struct xsk_tx_thread *t = s->tx_thread;
    uint32_t pending = s->tx.cached_prod - ring_load_acquire(s->tx.consumer);
    if (pending == 0)
        return 0;
    /* A thread that has exited (stop) or lives in the parent of this forked process
     * will not send: this caller does, whatever its flag says. */
    if (__atomic_load_n(&t->stop, __ATOMIC_SEQ_CST) || !tx_thread_ours(t))
        return xsk_kick_here(s);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the producer store before the flag load */
    if (!__atomic_load_n(&t->sleeping, __ATOMIC_SEQ_CST))
        return 0; /* awake: it rereads the producer before it sleeps */
    if (pending < t->min_batch)
        return xsk_kick_here(s);
    __atomic_store_n(&t->sleeping, 0, __ATOMIC_SEQ_CST);
    uint64_t one = 1;
    if (write(t->efd, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
        __atomic_store_n(&t->sleeping, 1, __ATOMIC_SEQ_CST); /* still asleep */
        return xsk_kick_here(s);
    }
    s->st.tx_thread_wakeups++;
    return 0;
}

int xsk_tx_thread_start(struct xsk_sock *s, uint32_t min_batch)
{
    if (s->fd < 0)
        return -EBADF;
    if (s->tx_thread != NULL)
        return -EALREADY;
    struct xsk_tx_thread *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    pthread_once(&fork_hook_once, install_fork_hook);
    t->s = s;
    t->min_batch = min_batch;
    t->forks = fork_count;
    t->sleeping = 1;
    t->efd = eventfd(0, EFD_CLOEXEC);
    t->room_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (t->efd < 0 || t->room_efd < 0) {
        int err = -errno;
        if (t->efd >= 0)
            close(t->efd);
        if (t->room_efd >= 0)
            close(t->room_efd);
        free(t);
        return err;
    }
    /* Signals stay with the application's threads (Python handles them in its main
     * thread): the helper starts with all of them blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&t->thread, NULL, tx_thread_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        close(t->efd);
        close(t->room_efd);
        free(t);
        return -rc;
    }
    s->tx_thread = t;
    return 0;
}

void xsk_tx_thread_stop(struct xsk_sock *s)
{
    struct xsk_tx_thread *t = s->tx_thread;
    if (t == NULL)
        return;
    int ours = tx_thread_ours(t);
    if (ours) {
        __atomic_store_n(&t->stop, 1, __ATOMIC_SEQ_CST);
        uint64_t one = 1;
        while (write(t->efd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
        pthread_join(t->thread, NULL);
    } /* else: a forked child, where only the calling thread exists: nothing to join */
    close(t->efd);
    close(t->room_efd);
    s->tx_thread = NULL;
    free(t);
    /* What was handed to the thread and not sent yet (it stops before draining a
     * wake-up that came with the stop) leaves now: RSTs queued by a closing engine. */
    if (ours)
        xsk_kick_here(s);
}

int xsk_tx_room_fd(struct xsk_sock *s)
{
    struct xsk_tx_thread *t = s->tx_thread;
    return t != NULL && tx_thread_ours(t) ? t->room_efd : -1;
}

int xsk_tx_want_room(struct xsk_sock *s, int want)
{
    struct xsk_tx_thread *t = s->tx_thread;
    if (t == NULL || !tx_thread_ours(t))
        return -ENOTCONN;
    /* Drained first, also for a thread that has stopped: it tells on its way out, and
     * a readable eventfd nobody drains would wake every epoll_wait. */
    uint64_t count;
    if (read(t->room_efd, &count, sizeof(count)) < 0) {
        /* EAGAIN: nothing was told since the last call. */
    }
    if (__atomic_load_n(&t->stop, __ATOMIC_SEQ_CST))
        return -ENOTCONN;
    if (!want) {
        __atomic_store_n(&t->room_wanted, 0, __ATOMIC_SEQ_CST);
        return 0;
    }
    /* The kernel transmits only while the completion ring has room, and only this
     * thread reaps it; a tx thread that made no progress sleeps: reap, then wake it
     * for what waits (a no-op while it runs), so that room can come at all. */
    if (xsk_complete(s, 1u << 20) > 0)
        return 1; /* frames came back: room for a send the allocator refused */
    int err = xsk_kick(s);
    if (err < 0)
        return err;
    __atomic_store_n(&t->room_wanted, 1, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the flag's store before the consumer's load */
    if (ring_load_acquire(s->tx.consumer) != s->full_cons) {
        __atomic_store_n(&t->room_wanted, 0, __ATOMIC_SEQ_CST);
        return 1; /* it moved since the send that found no room */
    }
    return 0;
}
