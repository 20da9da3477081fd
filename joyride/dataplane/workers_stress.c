/* Stress driver for the workers' hand-over (workers.c; not part of the module): built by
 * tests/unit/dataplane/test_dataplane_sanitize.py with -fsanitize=thread, which reports
 * any access to a plane that the hand-over does not order.
 *
 * PLANES planes with in-memory ports, each run by its worker. Between two
 * dp_workers_run calls (every worker parked) the driver, as the control plane would,
 * pushes frames for no flow into random ports (their worker declines them), transmits
 * frames through random planes, takes every declined frame and pops every transmitted
 * one; each run lets the workers go for no time or a millisecond. At the end every
 * frame pushed was declined once, by its own plane, and every frame transmitted left by
 * its plane's port.
 *
 * usage: workers_stress CYCLES SEED ; prints "ok <declined> <transmitted> <asks>". */
#define _GNU_SOURCE
#include "wire.c"
#include "isn.c"
#include "capture.c"
#include "dataplane.c"
#include "chanapp.c"
#include "hub.c"
#include "workers.c"

#include <stdio.h>

#include "fuzz_rng.h"

#define PLANES 3
#define FRAME_LEN 54

/* An ACK from 10.0.0.2:sport to 10.0.0.1:9 (no flow has it: the plane declines it). */
static void ack_frame(uint8_t *f, uint16_t sport)
{
    memset(f, 0, FRAME_LEN);
    f[12] = 0x08;                          /* IPv4 */
    uint8_t *ip = f + 14;
    ip[0] = 0x45;
    ip[3] = 40;                            /* total length */
    ip[8] = 64;                            /* TTL */
    ip[9] = 6;                             /* TCP */
    memcpy(ip + 12, (const uint8_t[]){10, 0, 0, 2, 10, 0, 0, 1}, 8);
    uint8_t *tcp = ip + 20;
    tcp[0] = (uint8_t)(sport >> 8);
    tcp[1] = (uint8_t)sport;
    tcp[3] = 9;
    tcp[7] = 1;                            /* seq 1 */
    tcp[11] = 1;                           /* ack 1 */
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;                        /* ACK */
    tcp[14] = 0xff;                        /* window */
}

int main(int argc, char **argv)
{
    long cycles = argc > 1 ? atol(argv[1]) : 2000;
    rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) * 2654435761u + 1 : 1;
    struct dp_config cfg = {.max_flows = 64, .batch = 64, .max_frame = 1518,
                            .decline_frames = 256, .verify_checksums = 0, .ttl = 64,
                            .rx_batches = 8};
    struct dp *planes[PLANES];
    struct dp_memport *ports[PLANES];
    uint64_t pushed[PLANES] = {0}, declined[PLANES] = {0};
    uint64_t sent[PLANES] = {0}, popped[PLANES] = {0};
    uint8_t frame[FRAME_LEN], out[2048];

    for (int i = 0; i < PLANES; i++) {
        struct dp_port port;
        planes[i] = dp_new(&cfg);
        ports[i] = dp_memport_new(1024, 1518);
        if (!planes[i] || !ports[i] || dp_memport_port(ports[i], &port) ||
            dp_add_port(planes[i], &port)) {
            fprintf(stderr, "setup failed\n");
            return 1;
        }
    }
    struct dp_workers *g = dp_workers_new(planes, PLANES);
    if (!g) {
        perror("dp_workers_new");
        return 1;
    }
    for (long c = 0; c < cycles; c++) {
        for (int k = (int)(rnd() % 4); k > 0; k--) {
            int i = (int)(rnd() % PLANES);
            ack_frame(frame, (uint16_t)(1024 + rnd() % 60000));
            if (dp_memport_push(ports[i], frame, FRAME_LEN) == 0)
                pushed[i]++;
        }
        if (rnd() % 3 == 0) {
            int i = (int)(rnd() % PLANES);
            uint64_t off = 0;
            uint32_t len = FRAME_LEN;
            ack_frame(frame, 7);
            sent[i] += dp_transmit(planes[i], frame, &off, &len, 1);
            dp_kick(planes[i]);
        }
        int rc = dp_workers_run(g, rnd() % 8 == 0 ? 1 : 0);
        if (rc < 0) {
            fprintf(stderr, "dp_workers_run: %d\n", rc);
            return 1;
        }
        for (int i = 0; i < PLANES; i++) {
            uint8_t *base;
            uint64_t *offs;
            uint32_t *lens;
            declined[i] += dp_declined(planes[i], &base, &offs, &lens);
            dp_declined_clear(planes[i]);
            while (dp_memport_pop(ports[i], out, sizeof(out)) > 0)
                popped[i]++;
        }
    }
    uint64_t total_declined = 0, total_sent = 0, asks = 0;
    for (int i = 0; i < PLANES; i++) {
        struct dp_worker_stats st;
        dp_workers_stats(g, (uint32_t)i, &st);
        asks += st.asks;
        if (declined[i] != pushed[i] || popped[i] != sent[i]) {
            fprintf(stderr, "plane %d: pushed %lu declined %lu, sent %lu popped %lu\n", i,
                    (unsigned long)pushed[i], (unsigned long)declined[i],
                    (unsigned long)sent[i], (unsigned long)popped[i]);
            return 1;
        }
        total_declined += declined[i];
        total_sent += sent[i];
    }
    dp_workers_free(g);
    for (int i = 0; i < PLANES; i++) {
        dp_free(planes[i]);
        dp_memport_free(ports[i]);
    }
    printf("ok %lu %lu %lu\n", (unsigned long)total_declined, (unsigned long)total_sent,
           (unsigned long)asks);
    return 0;
}
