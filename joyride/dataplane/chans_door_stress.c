/* Stress driver for the doors of the channels the workers share (channels.c; not part
 * of the module): built by tests/unit/dataplane/test_dataplane_sanitize.py with
 * -fsanitize=thread. chans_stress.c drives the claims and the bell; this one the paths
 * around an arena's door, which one plane watches:
 *   - more arenas than the table's 64 entries, so a claim evicts idle arenas, among
 *     them arena 0, whose door another plane's epoll may watch;
 *   - each plane drains its own epoll as its loop would (chan_door_rang on TAG_ADOOR),
 *     stale events for entries since reused included;
 *   - flows switched in and out of door mode (chan_door_mode), the door-mode arm
 *     (jr_chan_svc_arm) written to the door word;
 *   - an application thread ringing arena 0's door all the time.
 * At the end: TSan reported nothing; no plane ever had a channel in door mode for a
 * door another plane watches; no door was dropped as broken (the application never
 * shuts its door, so a drop would mean a recv on a closed or reused descriptor); every
 * id is free.
 *
 * usage: chans_door_stress ROUNDS SEED ; prints "ok <claims> <door_mode> <rang>".
 * (First written by a reviewer of the shared table, session 33.) */
#include "stress_planes.h"

#define PLANES 2
#define NARENAS 70
#define CAP 4096

static struct jr_arena_app ars[NARENAS];
static uint32_t stop_app;
static const uint64_t trim_every = 32;
static struct dp *planes[PLANES];

struct driver {
    int index;
    long rounds;
    uint64_t rng;
    uint64_t claims, door_mode, rang, wrong_door;
    int failed;
};

static void drain_events(struct dp *dp, struct driver *d)
{
    struct epoll_event evs[16];
    int n = epoll_wait(dp->epfd, evs, 16, 0);
    for (int e = 0; e < n; e++)
        if (evs[e].data.u64 & TAG_ADOOR) {
            chan_door_rang(dp, (uint32_t)evs[e].data.u64, evs[e].events);
            d->rang++;
        }
}

static void *plane_main(void *arg)
{
    struct driver *d = arg;
    struct dp *dp = planes[d->index];
    for (long r = 0; r < d->rounds && !d->failed; r++) {
        d->rng = d->rng * 6364136223846793005ull + 1442695040888963407ull;
        /* Arena 0 (the door's) a third of the time, else any of the others. */
        uint32_t k = (d->rng >> 33) % 3 == 0 ? 0
                                              : 1 + (uint32_t)((d->rng >> 35) % (NARENAS - 1));
        uint32_t slot = (uint32_t)d->index;
        uint32_t id = ((uint32_t)d->index + 1) << 24 | (uint32_t)(r + 1);
        int sv[2];
        struct jr_chan_app view;
        int64_t chan = stress_claim(dp, &ars[k], slot, id, sv, &view);
        if (chan <= 0) {
            fprintf(stderr, "plane %d round %ld arena %u: claim %ld\n", d->index, r, k,
                    (long)chan);
            d->failed = 1;
            break;
        }
        d->claims++;
        chan_door_mode(dp, (uint32_t)chan, 1);
        struct jr_chan_svc *s = chan_svc(dp->chans, (uint32_t)chan);
        if (s->arena_door != NULL) {
            d->door_mode++;
            chans_lock(dp->chans);
            if (dp->chans->arenas.a[s->arena].wake.door_epfd != dp->epfd)
                d->wrong_door++;
            chans_unlock(dp->chans);
            jr_chan_svc_arm(s, sv[0], JR_CHAN_WAIT_BYTES); /* the door word, the flag */
            /* The application rings it (as the ringing thread does, at its own pace):
             * this plane's epoll has the door to drain below. */
            char dd = 'D';
            (void)!send(ars[k].door, &dd, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
        drain_events(dp, d);
        chan_door_mode(dp, (uint32_t)chan, 0);
        dp_chan_release(dp, (uint32_t)chan);
        close(sv[0]);
        close(sv[1]);
        drain_events(dp, d); /* events for doors since evicted by the other plane */
        if ((d->rng >> 40) % trim_every == 0)
            dp_chan_trim(dp);
    }
    return NULL;
}

static void *app_main(void *arg)
{
    (void)arg;
    char dd = 'D';
    while (!__atomic_load_n(&stop_app, __ATOMIC_ACQUIRE)) {
        jr_arena_app_ring_door(&ars[0]); /* the word, if a plane set it */
        (void)!send(ars[0].door, &dd, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 3000;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    if (stress_shared_planes(planes, PLANES) != 0)
        return 1;
    for (int k = 0; k < NARENAS; k++)
        if (jr_arena_app_create(&ars[k], PLANES, CAP, CAP) != 0 ||
            (k == 0 && jr_arena_app_door(&ars[k]) != 0))
            return 1;
    pthread_t app, threads[PLANES];
    struct driver drivers[PLANES];
    pthread_create(&app, NULL, app_main, NULL);
    for (int i = 0; i < PLANES; i++) {
        drivers[i] = (struct driver){.index = i, .rounds = rounds,
                                     .rng = seed * 7919 + (uint64_t)i};
        pthread_create(&threads[i], NULL, plane_main, &drivers[i]);
    }
    int failed = 0;
    uint64_t dropped = 0;
    for (int i = 0; i < PLANES; i++) {
        pthread_join(threads[i], NULL);
        failed |= drivers[i].failed;
    }
    __atomic_store_n(&stop_app, 1, __ATOMIC_RELEASE);
    pthread_join(app, NULL);
    uint64_t claims = 0, door_mode = 0, rang = 0;
    for (int i = 0; i < PLANES; i++) {
        dropped += planes[i]->st.chan_doors_dropped;
        claims += drivers[i].claims;
        door_mode += drivers[i].door_mode;
        rang += drivers[i].rang;
        if (drivers[i].wrong_door != 0) {
            fprintf(stderr, "plane %d: %lu channels in door mode for another's door\n", i,
                    (unsigned long)drivers[i].wrong_door);
            failed = 1;
        }
    }
    struct dp_chans *c = planes[0]->chans;
    if (c->n_free != c->max || dropped != 0) {
        fprintf(stderr, "free %u/%u, doors dropped %lu\n", c->n_free, c->max,
                (unsigned long)dropped);
        failed = 1;
    }
    for (int i = 0; i < PLANES; i++)
        dp_free(planes[i]);
    if (failed)
        return 1;
    printf("ok %lu %lu %lu\n", (unsigned long)claims, (unsigned long)door_mode,
           (unsigned long)rang);
    return 0;
}
