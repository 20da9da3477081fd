"""AF_XDP sockets and UMEM over cffi, batch-first.

Built directly on the kernel uapi (``<linux/if_xdp.h>``, ``bpf(2)``), without libxdp.
The ring hot loops are C; Python calls them once per batch.

    from xsk import Umem, Socket, attach_redirect_all

    umem = Umem(frame_count=4096, frame_size=2048)
    with attach_redirect_all("eth0", "native") as prog, Socket("eth0", 0, umem) as sock:
        prog.register(sock)
        batch = sock.recv(64, timeout=1.0)
        ...
        sock.release(batch)

For the steering program: register ``sock.fileno()`` in an XSKMAP at key ``sock.queue``.
"""

from xsk.batch import DESC_DTYPE, RxArrays, RxBatch, TxBatch
from xsk.errors import (
    ConfigError,
    FrameError,
    InterfaceNotFound,
    QueueBusy,
    QueueOutOfRange,
    RingSizeError,
    SocketClosed,
    UmemError,
    UmemExhausted,
    UmemInUse,
    XdpAttachError,
    XskError,
    XskPermissionError,
    XskUnsupported,
    ZeroCopyUnsupported,
)
from xsk.redirect_program import RedirectProgram, attach_redirect_all
from xsk.umem import PACKET_HEADROOM, Umem
from xsk.xdp_socket import KERNEL_STATS, LOCAL_STATS, Socket

__all__ = [
    "DESC_DTYPE",
    "KERNEL_STATS",
    "LOCAL_STATS",
    "PACKET_HEADROOM",
    "ConfigError",
    "FrameError",
    "InterfaceNotFound",
    "QueueBusy",
    "QueueOutOfRange",
    "RedirectProgram",
    "RingSizeError",
    "RxArrays",
    "RxBatch",
    "Socket",
    "SocketClosed",
    "TxBatch",
    "Umem",
    "UmemError",
    "UmemExhausted",
    "UmemInUse",
    "XdpAttachError",
    "XskError",
    "XskPermissionError",
    "XskUnsupported",
    "ZeroCopyUnsupported",
    "attach_redirect_all",
]
