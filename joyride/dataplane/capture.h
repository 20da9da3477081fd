/* The capture tap (joyride capture): a bounded ring of pcap records of the frames the
 * data plane receives and sends, filtered by a classic BPF program.
 *
 * This header doubles as part of the cffi cdef (cffi_build/dataplane_build.py).
 *
 * Contract.
 *  - Off by default and free when off: the data plane calls in only while a struct cap
 *    is set (dp_set_capture), one test per batch otherwise.
 *  - Never stalls the data path: a record that does not fit in the ring is dropped and
 *    counted (struct cap_stats.dropped); the ring is emptied by cap_read.
 *  - One thread: the one that owns the struct dp (the service loop) calls everything.
 *  - The filter is a classic BPF program (struct sock_filter's layout, what libpcap's
 *    pcap_compile emits for LINKTYPE_ETHERNET) checked by cap_validate before it is
 *    run: jumps stay inside it, scratch memory indices are < 16, no constant division
 *    by zero, it ends in a return; a load outside the frame rejects the frame.
 *  - Records are pcap's (struct pcap_sf_pkthdr: seconds, microseconds, captured and
 *    original length, host order, then the bytes), whole, in arrival order.
 */
#ifndef JOYRIDE_CAPTURE_H
#define JOYRIDE_CAPTURE_H

#include <stdint.h>

struct cap_insn {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
};

struct cap_stats {
    uint64_t seen;             /* frames offered to the tap */
    uint64_t matched;          /* ... that the filter accepted */
    uint64_t captured;         /* ... whose record is in the ring (or was read) */
    uint64_t dropped;          /* ... that found the ring full */
    uint64_t read_bytes;       /* record bytes taken by cap_read */
};

struct cap;

/* NULL: allocation failed or the program is invalid (prog_len 0: every frame). */
struct cap *cap_new(uint32_t ring_bytes, uint32_t snaplen, const struct cap_insn *prog,
                    uint32_t prog_len);
void cap_free(struct cap *c);
int cap_validate(const struct cap_insn *prog, uint32_t len);   /* 0 or -EINVAL */
/* The program's verdict on one frame (bytes to keep; 0: reject). Tests compare it
 * with libpcap's bpf_filter. */
uint32_t cap_run_filter(const struct cap_insn *prog, uint32_t prog_len,
                        const uint8_t *frame, uint32_t len);
/* Offer frames: frame i at base + offs[i], lens[i] bytes. */
void cap_frames(struct cap *c, const uint8_t *base, const uint64_t *offs,
                const uint32_t *lens, uint32_t n);
/* Take whole records, oldest first, into out (at most cap bytes); bytes copied. */
uint32_t cap_read(struct cap *c, uint8_t *out, uint32_t cap);
uint32_t cap_pending(const struct cap *c);                     /* bytes in the ring */
const struct cap_stats *cap_stats(const struct cap *c);

#endif
