"""The verbs vocabulary: a posted WR is a snapshot, and its length follows its SGEs."""

from kdlab.verbs import SGE, Opcode, SendWR


def test_copy_is_a_snapshot_of_every_field() -> None:
    wr = SendWR(1, Opcode.RDMA_WRITE_WITH_IMM, [SGE(10, 20, 3)], remote_addr=5, rkey=6, imm_data=7,
                compare_add=8, swap=9, signaled=False, inline=True)  # fmt: skip
    snap = wr.copy()
    assert all(getattr(snap, name) == getattr(wr, name) for name in SendWR.__slots__)
    wr.remote_addr, wr.sg_list = 99, [SGE(0, 4, 3), SGE(8, 4, 3)]
    assert snap.remote_addr == 5 and snap.length == 20
    assert wr.length == 8
