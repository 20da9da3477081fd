/* What the ThreadSanitizer drivers of the shared channels (chans_stress.c,
 * chans_door_stress.c) have in common: the whole module in one translation unit, and
 * planes made alike that share one table of channels. Not part of the module. */
#ifndef JOYRIDE_STRESS_PLANES_H
#define JOYRIDE_STRESS_PLANES_H

#define _GNU_SOURCE
#include "wire.c"
#include "isn.c"
#include "capture.c"
#include "dataplane.c"
#include "chanapp.c"
#include "hub.c"
#include "workers.c"

#include <stdio.h>

/* n planes without ports sharing one table (dp_share_channels): 0, or -1 (said why). */
static int stress_shared_planes(struct dp **planes, int n)
{
    struct dp_config cfg = {.max_flows = 64, .batch = 64, .max_frame = 1518,
                            .decline_frames = 256, .verify_checksums = 0, .ttl = 64,
                            .rx_batches = 8};
    for (int i = 0; i < n; i++)
        if ((planes[i] = dp_new(&cfg)) == NULL) {
            fprintf(stderr, "dp_new failed\n");
            return -1;
        }
    int rc = dp_share_channels(planes, (uint32_t)n);
    if (rc != 0)
        fprintf(stderr, "dp_share_channels: %d\n", rc);
    return rc != 0 ? -1 : 0;
}

/* A connection's socket pair (sv: the service's end, the application's) and its claim
 * of slot in ar, taken by dp as a delivered connection's first bytes: the channel's id
 * (> 0, *view the application's side) or <= 0 (sv closed, or never opened: -1). */
static int64_t stress_claim(struct dp *dp, struct jr_arena_app *ar, uint32_t slot,
                            uint32_t claim_id, int sv[2], struct jr_chan_app *view)
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -1;
    uint8_t buf[64];
    int64_t got = 0, chan = 0;
    if (jr_chan_app_claim(sv[1], ar, slot, claim_id, 0) != 0 ||
        (chan = dp_chan_take_first(dp, sv[0], buf, sizeof buf, 1, &got)) <= 0 ||
        jr_chan_app_verdict(ar, slot, claim_id, view) != 1) {
        close(sv[0]);
        close(sv[1]);
        return chan > 0 ? 0 : chan;
    }
    return chan;
}

#endif
