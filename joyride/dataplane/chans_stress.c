/* Stress driver for the table of channels the workers share (channels.c; not part of
 * the module): built by tests/unit/dataplane/test_dataplane_sanitize.py with
 * -fsanitize=thread, which reports any access to the table, an arena or its bell that
 * the locks do not order.
 *
 * PLANES planes share one table (dp_share_channels), each driven by a thread of its own
 * as its worker would be. One application arena with a door; plane k's thread claims
 * slots k, k + PLANES, ... through the real entry point (dp_chan_take_first: the claim,
 * the arena's mapping, the door taken when the claim brings it), puts a byte into the
 * channel with the application's arm on the bell (dp_chan_deliver: a push under the
 * arena's wake lock, the door written while the application sleeps), releases it, and
 * now and then trims, which unmaps the arena when no channel is live (its door goes,
 * the next claim brings it again, to any plane). Those trims race the other planes'
 * claims and succeed only when the timing allows, so every SYNC_EVERY rounds the planes
 * also meet with nothing claimed and each trims: the arena certainly goes and comes back,
 * whatever the scheduler does. The application's side of each claim
 * runs in the same thread, as a shim's would in any process. A reader thread takes the
 * bell's queue and drains the door as the application's epoll_wait would.
 *
 * At the end every byte put was announced once (a push, counted by the table, or a
 * token on the socket when no door was held), every push was taken or counted lost,
 * every id is free and no arena keeps a live channel.
 *
 * usage: chans_stress ROUNDS SEED ; prints "ok <claims> <pushes> <tokens> <trims>". */
#include "stress_planes.h"

#define PLANES 3
#define SLOTS 24
#define CAP 4096
#define SYNC_EVERY 100

static pthread_barrier_t all_released, all_trimmed;

struct driver {
    struct dp *dp;
    struct jr_arena_app *ar;
    int index;
    long rounds;
    uint64_t seed;
    uint64_t claims, tokens, trims;
    int failed;
};

static struct jr_arena_app arena;
static uint32_t stop_reader;
static uint64_t taken;

static void *reader_main(void *arg)
{
    struct jr_arena_bell *b = &jr_arena_app_chan(&arena, 0)->arena_bell;
    uint32_t ids[64];
    char junk[64];
    (void)arg;
    while (!__atomic_load_n(&stop_reader, __ATOMIC_ACQUIRE)) {
        uint32_t n = jr_arena_bell_take(b, ids, 64);
        for (uint32_t i = 0; i < n; i++)
            if (ids[i] >= SLOTS)
                abort(); /* a slot no claim named */
        taken += n;
        if (n == 0) {
            jr_arena_bell_arm(b, JR_LOAD(&b->lost)); /* as epoll_wait before it sleeps */
            while (recv(arena.door, junk, sizeof junk, MSG_DONTWAIT) > 0)
                ;
        }
    }
    for (uint32_t n; (n = jr_arena_bell_take(b, ids, 64)) > 0;)
        taken += n; /* what came after the last look */
    return NULL;
}

/* One round of plane d: claim, deliver a byte to an armed bell, release, maybe trim. */
static void plane_round(struct driver *d, long r, uint64_t *rng)
{
    uint32_t slot = (uint32_t)d->index + PLANES * (uint32_t)(r % (SLOTS / PLANES));
    uint32_t id = ((uint32_t)d->index + 1) << 24 | (uint32_t)(r + 1);
    int sv[2];
    struct jr_chan_app view;
    int64_t chan = stress_claim(d->dp, d->ar, slot, id, sv, &view);
    if (chan <= 0) {
        fprintf(stderr, "plane %d round %ld: claim %ld\n", d->index, r, (long)chan);
        d->failed = 1;
        return;
    }
    d->claims++;
    /* The application read rx empty and armed its bell (or a token). */
    __atomic_store_n(&view.shm->rx_armed, JR_RX_ARM_BELL, __ATOMIC_SEQ_CST);
    if (dp_chan_deliver(d->dp, (uint32_t)chan, sv[0], (const uint8_t *)"x", 1) != 1) {
        d->failed = 1;
    } else {
        char token;
        d->tokens += recv(sv[1], &token, 1, MSG_DONTWAIT) == 1;
    }
    dp_chan_release(d->dp, (uint32_t)chan);
    close(sv[0]);
    close(sv[1]);
    *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
    if ((*rng >> 33) % 16 == 0)
        d->trims += dp_chan_trim(d->dp); /* races the other planes' claims */
}

static void *plane_main(void *arg)
{
    struct driver *d = arg;
    uint64_t rng = d->seed;
    for (long r = 0; r < d->rounds; r++) {
        if (!d->failed)
            plane_round(d, r, &rng);
        if ((r + 1) % SYNC_EVERY == 0) {
            /* A failed plane still meets the others here, so the barriers always fill. */
            pthread_barrier_wait(&all_released);
            d->trims += dp_chan_trim(d->dp); /* the door's watcher unmaps the arena */
            pthread_barrier_wait(&all_trimmed);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 2000;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    struct dp *planes[PLANES];
    if (stress_shared_planes(planes, PLANES) != 0 ||
        jr_arena_app_create(&arena, SLOTS, CAP, CAP) != 0 || jr_arena_app_door(&arena) != 0) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    pthread_barrier_init(&all_released, NULL, PLANES);
    pthread_barrier_init(&all_trimmed, NULL, PLANES);
    pthread_t reader, threads[PLANES];
    struct driver drivers[PLANES];
    pthread_create(&reader, NULL, reader_main, NULL);
    for (int i = 0; i < PLANES; i++) {
        drivers[i] = (struct driver){.dp = planes[i], .ar = &arena, .index = i,
                                     .rounds = rounds, .seed = seed * 7919 + (uint64_t)i};
        pthread_create(&threads[i], NULL, plane_main, &drivers[i]);
    }
    uint64_t claims = 0, tokens = 0, trims = 0;
    int failed = 0;
    for (int i = 0; i < PLANES; i++) {
        pthread_join(threads[i], NULL);
        claims += drivers[i].claims;
        tokens += drivers[i].tokens;
        trims += drivers[i].trims;
        failed |= drivers[i].failed;
    }
    __atomic_store_n(&stop_reader, 1, __ATOMIC_RELEASE);
    pthread_join(reader, NULL);
    struct dp_chans *c = planes[0]->chans;
    struct jr_arena_bell *b = &jr_arena_app_chan(&arena, 0)->arena_bell;
    uint64_t pushes = c->arenas.bell_counts.pushes;
    uint32_t live = 0;
    for (uint32_t i = 0; i < c->arenas.max; i++)
        live += c->arenas.a[i].live;
    if (failed || claims != (uint64_t)rounds * PLANES || pushes + tokens != claims ||
        taken + JR_LOAD(&b->lost) != pushes || c->n_free != c->max || live != 0) {
        fprintf(stderr, "failed %d: claims %lu pushes %lu tokens %lu taken %lu lost %u "
                "free %u/%u live %u\n", failed, (unsigned long)claims,
                (unsigned long)pushes, (unsigned long)tokens, (unsigned long)taken,
                JR_LOAD(&b->lost), c->n_free, c->max, live);
        return 1;
    }
    for (int i = 0; i < PLANES; i++)
        dp_free(planes[i]);
    printf("ok %lu %lu %lu %lu\n", (unsigned long)claims, (unsigned long)pushes,
           (unsigned long)tokens, (unsigned long)trims);
    return 0;
}
