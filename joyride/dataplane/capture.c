/* The capture tap; the contract is in capture.h.
 *
 * The filter interpreter follows classic BPF as Linux (net/core/filter.c, the cBPF
 * checker) and libpcap (bpf_filter.c) define it: A and X registers, 16 words of
 * scratch memory, loads in network byte order, unsigned arithmetic.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capture.h"

/* Instruction classes and fields (linux/bpf_common.h). */
#define C_CLASS(c) ((c) & 0x07)
#define C_LD 0x00
#define C_LDX 0x01
#define C_ST 0x02
#define C_STX 0x03
#define C_ALU 0x04
#define C_JMP 0x05
#define C_RET 0x06
#define C_MISC 0x07
#define C_SIZE(c) ((c) & 0x18)
#define C_W 0x00
#define C_H 0x08
#define C_B 0x10
#define C_MODE(c) ((c) & 0xe0)
#define C_IMM 0x00
#define C_ABS 0x20
#define C_IND 0x40
#define C_MEM 0x60
#define C_LEN 0x80
#define C_MSH 0xa0
#define C_OP(c) ((c) & 0xf0)
#define C_ADD 0x00
#define C_SUB 0x10
#define C_MUL 0x20
#define C_DIV 0x30
#define C_OR 0x40
#define C_AND 0x50
#define C_LSH 0x60
#define C_RSH 0x70
#define C_NEG 0x80
#define C_MOD 0x90
#define C_XOR 0xa0
#define C_JA 0x00
#define C_JEQ 0x10
#define C_JGT 0x20
#define C_JGE 0x30
#define C_JSET 0x40
#define C_SRC(c) ((c) & 0x08)
#define C_X 0x08
#define C_RVAL(c) ((c) & 0x18)
#define C_A 0x10
#define C_MISCOP(c) ((c) & 0xf8)
#define C_TAX 0x00
#define C_TXA 0x80
#define MEMWORDS 16
#define MAX_INSNS 4096
#define REC_HDR 16 /* struct pcap_sf_pkthdr */

struct cap {
    uint8_t *ring;
    uint32_t size;
    uint32_t head;             /* oldest record's first byte */
    uint32_t used;
    uint32_t snaplen;
    uint32_t prog_len;
    struct cap_insn *prog;
    struct cap_stats st;
};

int cap_validate(const struct cap_insn *prog, uint32_t len)
{
    if (len == 0 || len > MAX_INSNS)
        return -EINVAL;
    for (uint32_t pc = 0; pc < len; pc++) {
        const struct cap_insn *p = &prog[pc];
        uint16_t c = p->code;
        switch (C_CLASS(c)) {
        case C_LD:
        case C_LDX:
            if (C_MODE(c) == C_MEM && p->k >= MEMWORDS)
                return -EINVAL;
            break;
        case C_ST:
        case C_STX:
            if (p->k >= MEMWORDS)
                return -EINVAL;
            break;
        case C_ALU:
            if ((C_OP(c) == C_DIV || C_OP(c) == C_MOD) && C_SRC(c) != C_X && p->k == 0)
                return -EINVAL;
            if (C_OP(c) > C_XOR)
                return -EINVAL;
            break;
        case C_JMP:
            if (C_OP(c) == C_JA) {
                if (p->k >= len - pc - 1)
                    return -EINVAL;
            } else if (C_OP(c) > C_JSET || (uint32_t)p->jt + 1 >= len - pc + 0u ||
                       (uint32_t)p->jf + 1 >= len - pc + 0u) {
                return -EINVAL;
            }
            break;
        default:
            break;
        }
    }
    return C_CLASS(prog[len - 1].code) == C_RET ? 0 : -EINVAL;
}

static int load(const uint8_t *f, uint32_t len, uint32_t at, uint32_t size, uint32_t *out)
{
    if (at > len || size > len - at)
        return -1;
    if (size == 4)
        *out = (uint32_t)f[at] << 24 | (uint32_t)f[at + 1] << 16 | (uint32_t)f[at + 2] << 8 |
               f[at + 3];
    else if (size == 2)
        *out = (uint32_t)f[at] << 8 | f[at + 1];
    else
        *out = f[at];
    return 0;
}

uint32_t cap_run_filter(const struct cap_insn *prog, uint32_t prog_len, const uint8_t *f,
                        uint32_t len)
{
    uint32_t A = 0, X = 0, mem[MEMWORDS] = {0};
    for (uint32_t pc = 0; pc < prog_len; pc++) {
        const struct cap_insn *p = &prog[pc];
        uint16_t c = p->code;
        uint32_t size = C_SIZE(c) == C_W ? 4 : C_SIZE(c) == C_H ? 2 : 1;
        uint32_t v;
        switch (C_CLASS(c)) {
        case C_LD:
            switch (C_MODE(c)) {
            case C_ABS:
                if (load(f, len, p->k, size, &A))
                    return 0;
                break;
            case C_IND:
                if (X + p->k < X || load(f, len, X + p->k, size, &A))
                    return 0;
                break;
            case C_LEN: A = len; break;
            case C_IMM: A = p->k; break;
            case C_MEM: A = mem[p->k]; break;
            default: return 0;
            }
            break;
        case C_LDX:
            switch (C_MODE(c)) {
            case C_IMM: X = p->k; break;
            case C_MEM: X = mem[p->k]; break;
            case C_LEN: X = len; break;
            case C_MSH:
                if (load(f, len, p->k, 1, &v))
                    return 0;
                X = (v & 0xf) << 2;
                break;
            default: return 0;
            }
            break;
        case C_ST: mem[p->k] = A; break;
        case C_STX: mem[p->k] = X; break;
        case C_ALU:
            v = C_SRC(c) == C_X ? X : p->k;
            switch (C_OP(c)) {
            case C_ADD: A += v; break;
            case C_SUB: A -= v; break;
            case C_MUL: A *= v; break;
            case C_DIV: if (v == 0) return 0; A /= v; break;
            case C_MOD: if (v == 0) return 0; A %= v; break;
            case C_OR: A |= v; break;
            case C_AND: A &= v; break;
            case C_LSH: A = v < 32 ? A << v : 0; break;
            case C_RSH: A = v < 32 ? A >> v : 0; break;
            case C_NEG: A = -A; break;
            case C_XOR: A ^= v; break;
            default: return 0;
            }
            break;
        case C_JMP:
            v = C_SRC(c) == C_X ? X : p->k;
            switch (C_OP(c)) {
            case C_JA: pc += p->k; break;
            case C_JEQ: pc += A == v ? p->jt : p->jf; break;
            case C_JGT: pc += A > v ? p->jt : p->jf; break;
            case C_JGE: pc += A >= v ? p->jt : p->jf; break;
            case C_JSET: pc += (A & v) ? p->jt : p->jf; break;
            default: return 0;
            }
            break;
        case C_RET:
            return C_RVAL(c) == C_A ? A : C_RVAL(c) == C_X ? X : p->k;
        case C_MISC:
            if (C_MISCOP(c) == C_TAX)
                X = A;
            else if (C_MISCOP(c) == C_TXA)
                A = X;
            break;
        }
    }
    return 0;
}

struct cap *cap_new(uint32_t ring_bytes, uint32_t snaplen, const struct cap_insn *prog,
                    uint32_t prog_len)
{
    if (ring_bytes < 4096 || snaplen == 0 || (prog_len && cap_validate(prog, prog_len)))
        return NULL;
    struct cap *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->ring = malloc(ring_bytes);
    c->prog = prog_len ? malloc(prog_len * sizeof *prog) : NULL;
    if (!c->ring || (prog_len && !c->prog)) {
        cap_free(c);
        return NULL;
    }
    if (prog_len)
        memcpy(c->prog, prog, prog_len * sizeof *prog);
    c->prog_len = prog_len;
    c->size = ring_bytes;
    c->snaplen = snaplen;
    return c;
}

void cap_free(struct cap *c)
{
    if (!c)
        return;
    free(c->ring);
    free(c->prog);
    free(c);
}

/* Copy n bytes into the ring at its tail (room checked by the caller). */
static void ring_write(struct cap *c, const void *src, uint32_t n)
{
    uint32_t tail = (c->head + c->used) % c->size;
    uint32_t first = n < c->size - tail ? n : c->size - tail;
    memcpy(c->ring + tail, src, first);
    memcpy(c->ring, (const uint8_t *)src + first, n - first);
    c->used += n;
}

static void ring_peek(const struct cap *c, uint32_t off, void *dst, uint32_t n)
{
    uint32_t at = (c->head + off) % c->size;
    uint32_t first = n < c->size - at ? n : c->size - at;
    memcpy(dst, c->ring + at, first);
    memcpy((uint8_t *)dst + first, c->ring, n - first);
}

void cap_frames(struct cap *c, const uint8_t *base, const uint64_t *offs,
                const uint32_t *lens, uint32_t n)
{
    if (n == 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* one time per batch: pcap's resolution is µs */
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *frame = base + offs[i];
        uint32_t len = lens[i];
        c->st.seen++;
        uint32_t keep = c->prog_len ? cap_run_filter(c->prog, c->prog_len, frame, len) : len;
        if (keep == 0)
            continue;
        c->st.matched++;
        if (keep > len)
            keep = len;
        if (keep > c->snaplen)
            keep = c->snaplen;
        if (REC_HDR + keep > c->size - c->used) {
            c->st.dropped++;
            continue;
        }
        uint32_t hdr[4] = {(uint32_t)ts.tv_sec, (uint32_t)(ts.tv_nsec / 1000), keep, len};
        ring_write(c, hdr, sizeof hdr);
        ring_write(c, frame, keep);
        c->st.captured++;
    }
}

uint32_t cap_read(struct cap *c, uint8_t *out, uint32_t cap)
{
    uint32_t done = 0;
    while (c->used >= REC_HDR) {
        uint32_t hdr[4];
        ring_peek(c, 0, hdr, sizeof hdr);
        uint32_t rec = REC_HDR + hdr[2];
        if (rec > cap - done)
            break;
        ring_peek(c, 0, out + done, rec);
        c->head = (c->head + rec) % c->size;
        c->used -= rec;
        done += rec;
    }
    if (c->used == 0)
        c->head = 0; /* an empty ring restarts at its start: fewer wrapped copies */
    c->st.read_bytes += done;
    return done;
}

uint32_t cap_pending(const struct cap *c) { return c->used; }

const struct cap_stats *cap_stats(const struct cap *c) { return &c->st; }
