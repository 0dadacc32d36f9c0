"""One role's verbs resources on a real device, through pyverbs.

:class:`Verbs` owns a role process's device context, protection domain, memory
regions, completion queues and queue pairs, and performs kdlab operations on them.
It hands out the engine-neutral handles of :mod:`kdlab.verbs` and maps pyverbs work
completions back to :class:`kdlab.verbs.WorkCompletion`. pyverbs is imported when
the first resource is needed, in the role's own process (after the fork).

Every wait (CQ polling, memory spinning, completion events) gives up after
``timeout_s`` with :class:`TimeoutError`, so a lost completion never hangs a run.
"""

from __future__ import annotations

import ctypes
import ipaddress
import mmap
import os
import random
import select
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from kdlab.verbs import (
    Access,
    CompletionQueue,
    DeviceInfo,
    MemoryRegion,
    QpCap,
    QpEndpoint,
    QueuePair,
    RecvWR,
    SendWR,
    WorkCompletion,
)
from kdreal.host import gil_friendly_pause
from kdreal.wrs import WrCache, to_work_completion

#: max_inline_data values tried, largest first, to find the device's limit.
INLINE_PROBE = (1024, 512, 400, 256, 220, 188, 128, 64, 32, 16, 0)
#: How many spin iterations pass between two looks at the clock.
_SPIN_CHECK = 256
#: An event-mode wait whose channel descriptor is unknown polls with sleeps this long.
_NO_FD_SLEEP_S = 0.0005
_QP_ACCESS = int(Access.all())
_IBV_QPT_RC = 2


class VerbsError(RuntimeError):
    """A verb failed as ``ibv_*`` reports it (the pyverbs error is chained)."""


@dataclass
class _Cq:
    cq: Any
    channel: Any = None
    fd: int | None = None  # the completion channel's file descriptor, for select()


@dataclass
class _Mr:
    mr: Any
    length: int
    backing: list[Any] = field(default_factory=list)  # mmap and its ctypes view, for file-backed MRs


def _event_fds() -> set[int]:
    """This process's completion-channel file descriptors (anon inodes ``[infinibandevent]``)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").endswith("[infinibandevent]"):
                fds.add(int(name))
        except OSError:
            continue
    return fds


class Verbs:
    """The verbs resources of one role process on one device port."""

    def __init__(
        self, host: str, device: str | None = None, gid_index: int | None = None, port: int = 1,
        timeout_s: float = 30.0,
    ) -> None:  # fmt: skip
        self.host = host
        self.device = device
        self.port = port
        self.timeout_s = timeout_s
        self._gid_index = gid_index
        self._ctx: Any = None
        self._ids = iter(range(1, 1 << 62))
        self._mrs: dict[int, _Mr] = {}
        self._cqs: dict[int, _Cq] = {}
        self._qps: dict[int, Any] = {}
        self._psn: dict[int, int] = {}
        self._info: DeviceInfo | None = None
        self._wrs = WrCache()
        #: Several role threads share this process: busy loops let the others run.
        self.shared = False
        #: Busy CQ waits may spin (else they yield the CPU after each empty poll; the engine decides).
        self.spin = True

    # --- the device ---------------------------------------------------------------

    def _open(self) -> None:
        import pyverbs.device as pvdev
        from pyverbs.pd import PD

        try:
            import pyverbs.enums as e
        except ImportError:  # rdma-core >= ~50 renamed the module
            import pyverbs.libibverbs_enums as e  # type: ignore[no-redef]
        self.e = e
        name = self.device
        if name is None:
            devices = pvdev.get_device_list()
            if not devices:
                raise VerbsError("no RDMA device found")
            name = devices[0].name.decode()
        self._ctx = pvdev.Context(name=name)
        self.name = name
        self._pd = PD(self._ctx)
        self._dev_attr = self._ctx.query_device()
        self._port_attr = self._ctx.query_port(self.port)
        self.gid_index = self._gid_index if self._gid_index is not None else self._pick_gid()
        self.gid = str(self._ctx.query_gid(self.port, self.gid_index))

    @property
    def ctx(self) -> Any:
        if self._ctx is None:
            try:
                self._open()
            except VerbsError:
                raise
            except Exception as err:
                raise VerbsError(f"cannot open RDMA device {self.device or '(first listed)'}: {err}") from err
        return self._ctx

    def _pick_gid(self) -> int:
        """Prefer an IPv4-mapped GID (RoCE over IPv4; index 1 for rxe on ``lo``), else index 0."""
        for index in range(self._port_attr.gid_tbl_len):
            try:
                gid = ipaddress.IPv6Address(str(self._ctx.query_gid(self.port, index)))
            except Exception:  # an empty or unreadable table entry
                continue
            if gid.ipv4_mapped is not None:
                return index
        return 0

    def query_device(self) -> DeviceInfo:
        if self._info is None:
            self.ctx  # noqa: B018 - opens the device on first use
            attr = self._dev_attr
            self._info = DeviceInfo(
                name=self.name, max_inline_data=self._probe_inline(), max_qp_rd_atom=attr.max_qp_rd_atom,
                max_qp_wr=attr.max_qp_wr, max_cqe=attr.max_cqe,
            )  # fmt: skip
        return self._info

    def _probe_inline(self) -> int:
        """The largest max_inline_data of :data:`INLINE_PROBE` an RC QP can be created with."""
        from pyverbs.cq import CQ

        cq = CQ(self.ctx, 4)
        try:
            for size in INLINE_PROBE:
                try:
                    qp = self._new_qp(cq, cq, QpCap(4, 4, 1, 1, size))
                except Exception:
                    continue
                qp.close()
                return size
            return 0
        finally:
            cq.close()

    # --- resources ----------------------------------------------------------------

    def reg_mr(self, length: int, access: Access, path: str | None = None) -> MemoryRegion:
        """Register ``length`` zeroed bytes, or the first ``length`` bytes of file ``path``.

        A file is memory-mapped (``MAP_SHARED``, grown to ``length`` if shorter) and the
        mapping registered, so the MR *is* the file: its bytes start as the file's and
        what the peer writes reaches the file. A pyverbs without ``MR(address=...)``
        gets an anonymous MR holding a copy of the file instead (writes do not persist).
        """
        from pyverbs.mr import MR

        if length <= 0:
            raise ValueError(f"RegMr.length must be > 0 bytes, got {length}")
        backing: list[Any] = []
        try:
            if path is None:
                mr = MR(self._pd_(), length, int(access))
            else:
                buf = self._map_file(path, length)
                backing = [buf, ctypes.c_char.from_buffer(buf)]
                try:
                    mr = MR(self._pd_(), length, int(access), address=ctypes.addressof(backing[1]))
                except TypeError:  # pyverbs before MR(address=...)
                    mr = MR(self._pd_(), length, int(access))
                    mr.write(bytes(buf[:length]), length, 0)
                    backing.clear()
                    buf.close()
                    warnings.warn(f"RegMr({path!r}): this pyverbs cannot register a file mapping; "
                                  "registered an anonymous copy", RuntimeWarning, stacklevel=2)  # fmt: skip
        except Exception as err:
            raise VerbsError(f"RegMr({length}, path={path!r}) failed: {err}") from err
        self._mrs[mr.lkey] = _Mr(mr, length, backing)
        return MemoryRegion(addr=mr.buf, length=length, lkey=mr.lkey, rkey=mr.rkey, host=self.host)

    def dereg_mr(self, handle: MemoryRegion) -> None:
        """Deregister an MR this role registered and free its mapping. pyverbs objects belong to the role that made
        them: one another role of the host registered (a broker's first segment, made by its RDMA thread) is left
        to that role's close, so kdreal frees it later than kdsim does; its keys stay valid until then."""
        entry = self._mrs.pop(handle.lkey, None)
        if entry is None:
            return
        entry.mr.close()
        if entry.backing:
            buf = entry.backing[0]
            entry.backing.clear()
            buf.close()

    @staticmethod
    def _map_file(path: str, length: int) -> mmap.mmap:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < length:
                os.ftruncate(fd, length)
            return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    def _pd_(self) -> Any:
        self.ctx  # noqa: B018 - opens the device on first use
        return self._pd

    def create_cq(self, depth: int) -> CompletionQueue:
        """A CQ with its own completion channel, so that it can be waited on in event mode."""
        from pyverbs.cq import CQ, CompChannel

        if depth < 1:
            raise ValueError(f"CreateCq.depth must be >= 1, got {depth}")
        # Open the device first: opening it creates the context's async event descriptor,
        # also an ``[infinibandevent]``, which must not hide the channel's among the new ones.
        ctx = self.ctx
        try:
            before = _event_fds()
            channel = CompChannel(ctx)
            new = _event_fds() - before
            cq = CQ(ctx, depth, None, channel, 0)
        except Exception as err:
            raise VerbsError(f"CreateCq({depth}) failed: {err}") from err
        handle = CompletionQueue(next(self._ids), depth, self.host)
        self._cqs[handle.cq_id] = _Cq(cq, channel, new.pop() if len(new) == 1 else None)
        return handle

    def _new_qp(self, scq: Any, rcq: Any, cap: QpCap) -> Any:
        from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr

        pcap = QPCap(cap.max_send_wr, cap.max_recv_wr, cap.max_send_sge, cap.max_recv_sge, cap.max_inline_data)
        init = QPInitAttr(qp_type=_IBV_QPT_RC, scq=scq, rcq=rcq, cap=pcap, sq_sig_all=0)  # pyverbs defaults to 1
        attr = QPAttr(port_num=self.port)
        attr.qp_access_flags = _QP_ACCESS
        return QP(self._pd_(), init, attr)  # RC: returned in INIT

    def create_qp(self, send_cq: CompletionQueue, recv_cq: CompletionQueue, cap: QpCap) -> QueuePair:
        scq, rcq = self._cq(send_cq).cq, self._cq(recv_cq).cq
        try:
            qp = self._new_qp(scq, rcq, cap)
        except Exception as err:
            raise VerbsError(f"CreateQp({cap}) failed: {err}") from err
        psn = random.getrandbits(24)
        self._qps[qp.qp_num] = qp
        self._psn[qp.qp_num] = psn
        info = {"psn": psn, "gid": self.gid, "lid": self._port_attr.lid}
        return QueuePair(qp.qp_num, self.host, send_cq, recv_cq, cap, info)

    def connect_qp(self, qp: QueuePair, remote: QpEndpoint, rnr_retry: int, min_rnr_timer: int) -> None:
        """INIT -> RTR -> RTS towards ``remote`` (perftest's and ibv_rc_pingpong's attributes)."""
        from pyverbs.addr import GID, AHAttr, GlobalRoute
        from pyverbs.qp import QPAttr

        pqp = self._qp(qp)
        attr = QPAttr(port_num=self.port, path_mtu=self._port_attr.active_mtu)
        attr.qp_access_flags = _QP_ACCESS
        attr.dest_qp_num = remote.qp_num
        attr.rq_psn = remote.psn
        attr.sq_psn = self._psn[qp.qp_num]
        attr.max_dest_rd_atomic = self._dev_attr.max_qp_rd_atom
        attr.max_rd_atomic = self._dev_attr.max_qp_init_rd_atom
        attr.min_rnr_timer = min_rnr_timer
        attr.rnr_retry = rnr_retry
        attr.timeout = 14
        attr.retry_cnt = 7
        try:
            if remote.gid:
                gr = GlobalRoute(dgid=GID(remote.gid), sgid_index=self.gid_index)
                attr.ah_attr = AHAttr(port_num=self.port, is_global=1, gr=gr, dlid=remote.lid)
            else:
                attr.ah_attr = AHAttr(port_num=self.port, is_global=0, dlid=remote.lid)
            pqp.to_rts(attr)
        except Exception as err:
            raise VerbsError(f"ConnectQp({qp.qp_num} -> {remote}) failed: {err}") from err

    # --- the data path --------------------------------------------------------------

    def post_send(self, qp: QueuePair, wrs: SendWR | list[SendWR]) -> None:
        """Post one WR, or a list chained into one ``ibv_post_send`` call."""
        pqp = self._qp(qp)
        try:
            pqp.post_send(self._wrs.send(wrs))
        except Exception as err:
            raise VerbsError(f"PostSend on QP {qp.qp_num} failed: {err} ({wrs!r})") from err

    def post_recv(self, qp: QueuePair, wrs: RecvWR | list[RecvWR]) -> None:
        """Post receive WRs (the same WR object may appear several times in the list)."""
        pqp = self._qp(qp)
        try:
            pqp.post_recv(self._wrs.recv(wrs))
        except Exception as err:
            raise VerbsError(f"PostRecv on QP {qp.qp_num} failed: {err}") from err

    def poll_cq(self, cq: CompletionQueue, max_entries: int) -> list[WorkCompletion]:
        n, wcs = self._cq(cq).cq.poll(max_entries)
        return [to_work_completion(wc) for wc in wcs] if n else []

    def wait_cq(
        self, cq: CompletionQueue, max_entries: int, mode: str, timeout_s: float | None = -1.0,
        wait_s: float | None = None,
    ) -> list[WorkCompletion]:  # fmt: skip
        """Spin (``busy``) or sleep on the completion channel (``event``) until a completion arrives.

        Event mode arms the CQ, re-polls (a completion may have landed before it was
        armed), then waits for the channel's file descriptor with ``select`` so that
        the timeout holds and the GIL is given up, and only then reads and
        acknowledges the event. ``get_cq_event`` is never called before the
        descriptor is readable: pyverbs calls it holding the GIL, so a blocking call
        would stop every other thread of the host's process (a broker's handler
        threads, whose work the sleeping thread waits for). Should the descriptor not
        have been found, the wait polls with short sleeps instead.
        ``timeout_s`` overrides the role's time limit (None: wait as long as the run).
        ``wait_s`` (``WaitCq.timeout_ns``): return ``[]`` if nothing came within it.
        """
        entry = self._cq(cq)
        pcq = entry.cq
        n, wcs = pcq.poll(max_entries)
        if n:
            return [to_work_completion(wc) for wc in wcs]
        limit = self.timeout_s if timeout_s is not None and timeout_s < 0 else timeout_s
        if wait_s is not None and (limit is None or wait_s < limit):
            return self._wait_cq_for(cq, max_entries, mode, wait_s)
        deadline = float("inf") if limit is None else time.monotonic() + limit
        if mode == "busy":
            spins = 0
            pause, shared, give_away = gil_friendly_pause, self.shared, not self.spin
            while True:
                n, wcs = pcq.poll(max_entries)
                if n:
                    return [to_work_completion(wc) for wc in wcs]
                spins += 1
                if give_away:
                    os.sched_yield()
                else:
                    pause(shared)
                if spins % _SPIN_CHECK == 0 and time.monotonic() > deadline:
                    raise TimeoutError(f"WaitCq: no completion on CQ {cq.cq_id} within {limit} s")
        if mode != "event":
            raise ValueError(f"WaitCq.mode must be 'busy' or 'event', got {mode!r}")
        while True:
            if entry.fd is not None:
                pcq.req_notify()
            n, wcs = pcq.poll(max_entries)  # a completion may have landed before the CQ was armed
            if n:
                return [to_work_completion(wc) for wc in wcs]
            left = None if limit is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"WaitCq(event): no completion event on CQ {cq.cq_id} within {limit} s")
            if entry.fd is None:  # no descriptor to select on: sleep a little (GIL free), poll again
                time.sleep(_NO_FD_SLEEP_S if left is None else min(_NO_FD_SLEEP_S, left))
                continue
            if not select.select([entry.fd], [], [], left)[0]:
                raise TimeoutError(f"WaitCq(event): no completion event on CQ {cq.cq_id} within {limit} s")
            entry.channel.get_cq_event(pcq)
            pcq.ack_events(1)
            n, wcs = pcq.poll(max_entries)
            if n:
                return [to_work_completion(wc) for wc in wcs]

    def _wait_cq_for(self, cq: CompletionQueue, max_entries: int, mode: str, wait_s: float) -> list[WorkCompletion]:
        """Wait at most ``wait_s`` for a completion -> the completions, or ``[]``."""
        try:
            return self.wait_cq(cq, max_entries, mode, max(wait_s, 0.0))
        except TimeoutError:
            return []

    # --- host memory ----------------------------------------------------------------

    def _mr(self, handle: MemoryRegion, offset: int, length: int, what: str) -> Any:
        entry = self._mrs.get(handle.lkey)
        if entry is None or handle.host != self.host:
            raise VerbsError(f"memory region {handle} is not registered by this role")
        if offset < 0 or offset + length > entry.length:
            raise ValueError(f"{what}: bytes [{offset}, {offset + length}) lie outside the {entry.length} B MR")
        return entry.mr

    def read_mem(self, handle: MemoryRegion, offset: int, length: int) -> bytes:
        return self._mr(handle, offset, length, "ReadMem").read(length, offset)

    def write_mem(self, handle: MemoryRegion, offset: int, data: bytes) -> None:
        self._mr(handle, offset, len(data), "WriteMem").write(bytes(data), len(data), offset)

    def spin_until(self, handle: MemoryRegion, offset: int, value: bytes) -> None:
        n = len(value)
        mr = self._mr(handle, offset, n, "SpinUntil")
        read = mr.read
        if read(n, offset) == value:
            return
        deadline = time.monotonic() + self.timeout_s
        spins = 0
        while read(n, offset) != value:
            spins += 1
            gil_friendly_pause(self.shared)
            if spins % _SPIN_CHECK == 0 and time.monotonic() > deadline:
                raise TimeoutError(f"SpinUntil: MR {handle.lkey} [{offset}:{offset + n}] != {value!r} after "
                                   f"{self.timeout_s} s (last {read(n, offset)!r})")  # fmt: skip

    # --- lookup and teardown ----------------------------------------------------------

    def _cq(self, handle: CompletionQueue) -> _Cq:
        try:
            return self._cqs[handle.cq_id]
        except KeyError:
            raise VerbsError(f"completion queue {handle} was not created by this role") from None

    def _qp(self, handle: QueuePair) -> Any:
        try:
            return self._qps[handle.qp_num]
        except KeyError:
            raise VerbsError(f"queue pair {handle.qp_num} was not created by this role") from None

    def close(self) -> None:
        """Destroy QPs, MRs, CQs and channels, PD and context, in that order."""
        for qp in self._qps.values():
            qp.close()
        for entry in self._mrs.values():
            entry.mr.close()
            if entry.backing:
                buf = entry.backing[0]
                entry.backing.clear()
                buf.close()
        for c in self._cqs.values():
            c.cq.close()
            if c.channel is not None:
                c.channel.close()
        if self._ctx is not None:
            self._pd.close()
            self._ctx.close()
        self._qps.clear()
        self._mrs.clear()
        self._cqs.clear()
        self._ctx = None
