/* A minimal XDP loader over bpf(2): an XSKMAP and a five-instruction program
 *
 *     r2 = ctx->rx_queue_index
 *     r1 = &xsks                       (ld_imm64, BPF_PSEUDO_MAP_FD)
 *     r3 = XDP_PASS                    (fallback action when no socket is bound)
 *     r0 = bpf_redirect_map(r1, r2, r3)
 *     exit
 *
 * emitted by hand, so that the xsk package can be tested without BCC, clang, headers or
 * a compile step, and loads in about a millisecond. Attached with BPF_LINK_CREATE: the
 * link dies with its last fd, so a crashed test leaves no program on an interface.
 */
#include <errno.h>
#include <linux/bpf.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "xsk.h"

static long sys_bpf(int cmd, union bpf_attr *attr)
{
    long r = syscall(__NR_bpf, cmd, attr, sizeof(*attr));
    return r < 0 ? -errno : r;
}

int xsk_bpf_xskmap_create(uint32_t entries)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_type = BPF_MAP_TYPE_XSKMAP;
    attr.key_size = sizeof(uint32_t);
    attr.value_size = sizeof(uint32_t);
    attr.max_entries = entries;
    strncpy(attr.map_name, "xsk_redirect", sizeof(attr.map_name) - 1);
    return (int)sys_bpf(BPF_MAP_CREATE, &attr);
}

#define INSN(c, d, s, o, i) \
    ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})

int xsk_bpf_prog_load_redirect(int map_fd, char *log, uint32_t log_size)
{
    struct bpf_insn prog[] = {
        /* r2 = *(u32 *)(r1 + offsetof(struct xdp_md, rx_queue_index)) */
        INSN(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_2, BPF_REG_1,
             offsetof(struct xdp_md, rx_queue_index), 0),
        /* r1 = map (two-slot ld_imm64; the verifier turns the fd into a map pointer) */
        INSN(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        INSN(0, 0, 0, 0, 0),
        /* r3 = XDP_PASS: bpf_redirect_map's low flag bits are the action on a miss */
        INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_3, 0, 0, XDP_PASS),
        INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map),
        INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    };
    static const char license[] = "Dual BSD/GPL";
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_XDP;
    attr.insns = (uint64_t)(uintptr_t)prog;
    attr.insn_cnt = sizeof(prog) / sizeof(prog[0]);
    attr.license = (uint64_t)(uintptr_t)license;
    strncpy(attr.prog_name, "xsk_redirect", sizeof(attr.prog_name) - 1);
    if (log && log_size) {
        log[0] = 0;
        attr.log_buf = (uint64_t)(uintptr_t)log;
        attr.log_size = log_size;
        attr.log_level = 1;
    }
    long fd = sys_bpf(BPF_PROG_LOAD, &attr);
    if (fd == -ENOSPC && log) {
        /* The log was too small, not the program wrong: retry without a log. */
        attr.log_buf = 0;
        attr.log_size = 0;
        attr.log_level = 0;
        fd = sys_bpf(BPF_PROG_LOAD, &attr);
    }
    return (int)fd;
}

int xsk_bpf_link_create(int prog_fd, uint32_t ifindex, uint32_t flags)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.link_create.prog_fd = (uint32_t)prog_fd;
    attr.link_create.target_ifindex = ifindex;
    attr.link_create.attach_type = BPF_XDP;
    attr.link_create.flags = flags;
    return (int)sys_bpf(BPF_LINK_CREATE, &attr);
}

int xsk_bpf_map_update(int map_fd, uint32_t key, uint32_t value)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = (uint32_t)map_fd;
    attr.key = (uint64_t)(uintptr_t)&key;
    attr.value = (uint64_t)(uintptr_t)&value;
    attr.flags = BPF_ANY;
    return (int)sys_bpf(BPF_MAP_UPDATE_ELEM, &attr);
}

int xsk_bpf_map_delete(int map_fd, uint32_t key)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = (uint32_t)map_fd;
    attr.key = (uint64_t)(uintptr_t)&key;
    return (int)sys_bpf(BPF_MAP_DELETE_ELEM, &attr);
}

static int obj_info(int fd, void *info, uint32_t len)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.info.bpf_fd = (uint32_t)fd;
    attr.info.info_len = len;
    attr.info.info = (uint64_t)(uintptr_t)info;
    return (int)sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr);
}

int xsk_bpf_prog_id(int prog_fd, uint32_t *id)
{
    struct bpf_prog_info info;
    memset(&info, 0, sizeof(info));
    int r = obj_info(prog_fd, &info, sizeof(info));
    *id = info.id;
    return r;
}

int xsk_bpf_map_id(int map_fd, uint32_t *id)
{
    struct bpf_map_info info;
    memset(&info, 0, sizeof(info));
    int r = obj_info(map_fd, &info, sizeof(info));
    *id = info.id;
    return r;
}

int xsk_bpf_link_id(int link_fd, uint32_t *id)
{
    struct bpf_link_info info;
    memset(&info, 0, sizeof(info));
    int r = obj_info(link_fd, &info, sizeof(info));
    *id = info.id;
    return r;
}
