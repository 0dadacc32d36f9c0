"""The costs both datapaths pay, each a profile number, and what the clients time (issue 11, item 2).

Each test changes one profile number and checks that a measured interval or a thread's
CPU moves by exactly the amount the mechanism says: the hand-offs between a client's
application and Sender threads, the wake-up of a parked broker thread, the event-mode
RDMA thread, the append path both brokers pay, and the CRC at CRC-32C rate.
"""

from __future__ import annotations

import pytest

from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdsim.engine import SimEngine
from kdsim.profile import load_profile

BASE = load_profile("cx4-edr-100g")
# ProducerLatency's shape: one record per request, one request outstanding
ONE_OUTSTANDING = {"records_per_producer": 60, "record_bytes": 64, "batch_bytes": 1, "max_in_flight": 1,
                   "segment_bytes": 1 << 20}  # fmt: skip
SYSTEMS = ["kafka", "osu", "kafkadirect"]


def _run(overrides: dict | None = None, **params: object) -> tuple[KafkaParams, dict, SimEngine]:
    p = KafkaParams(**params)  # type: ignore[arg-type]
    engine = SimEngine(BASE.with_overrides(overrides or {}))
    return p, engine.run(build(p)), engine


def _growth(name: str, delta: float, key: str = "ack_latency_ns", role: str = "producer0", **params: object) -> set:
    """How much each sample of ``key`` grows when profile number ``name`` grows by ``delta`` (rounded to 1e-6 ns)."""
    _, before, _ = _run(**params)
    _, after, _ = _run({name: BASE.get(name) + delta}, **params)
    assert len(before[role][key]) == len(after[role][key]) > 0
    return {round(y - x, 6) for x, y in zip(before[role][key], after[role][key], strict=True)}


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_producer_latency_interval_holds_both_client_hand_offs(system: str) -> None:
    """send() -> Sender (sender.wakeup) and Sender -> get() (the future's latch): twice host.handoff_ns.

    Kafka over TCP pays the same hand-off once more inside the broker: its response goes back to
    the network thread asleep in its poll (Selector.wakeup). OSU's RDMA network thread and
    KafkaDirect's broker hand nothing back that way.
    """
    grown = _growth("host.handoff_ns", 1000.0, system=system, **ONE_OUTSTANDING)
    assert grown == {3000.0 if system == "kafka" else 2000.0}


@pytest.mark.parametrize("system", SYSTEMS)
def test_every_produce_wakes_one_parked_broker_thread_through_a_queue(system: str) -> None:
    """Kafka and OSU: network thread -> I/O thread; KafkaDirect: RDMA thread -> commit handler."""
    assert _growth("host.queue_wakeup_ns", 1000.0, system=system, **ONE_OUTSTANDING) == {1000.0}


@pytest.mark.parametrize(("system", "wakeups"), [("kafka", 2), ("osu", 0), ("kafkadirect", 1)])
def test_interrupt_driven_wake_ups_where_the_artifact_sleeps(system: str, wakeups: int) -> None:
    """Kafka: the broker's network thread and the Sender in epoll_wait, woken by the socket. KafkaDirect:
    the broker's idle RDMA thread on its completion channel (the Sender spins on its CQ). OSU: both spin."""
    assert _growth("host.wakeup_ns", 1000.0, system=system, **ONE_OUTSTANDING) == {1000.0 * wakeups}


def test_the_kafkadirect_rdma_thread_spins_while_a_produce_is_in_the_broker() -> None:
    """Many produces in flight: the RDMA thread rarely sleeps, so most produces pay no event wake-up."""
    loaded = {**ONE_OUTSTANDING, "max_in_flight": 8, "records_per_producer": 400, "system": "kafkadirect"}
    _, before, engine = _run(**loaded)
    after = _run({"host.wakeup_ns": BASE.host.wakeup_ns + 1000.0}, **loaded)[1]
    pairs = zip(before["producer0"]["ack_latency_ns"], after["producer0"]["ack_latency_ns"], strict=True)
    grown = [y - x for x, y in pairs]
    assert sum(g > 1e-6 for g in grown) <= loaded["max_in_flight"]  # only the first window waits for a wake-up
    assert max(grown) == pytest.approx(1000.0)
    spin = engine.stats.role_cpu_busy_ns["b0.rdma0"]
    assert spin > 0.5 * engine.stats.sim_time_ns  # it burns its core while produces are pending


def test_kafkadirect_commit_checks_the_crc_at_crc32c_rate_in_place() -> None:
    """The commit handler's CPU changes by exactly the batches' CRC time when crc32c_gbps changes, and not at all
    with memcpy_gbps: the segment is read in place (a mapped file), as the artifact's broker does."""
    params = {**ONE_OUTSTANDING, "record_bytes": 4000, "system": "kafkadirect"}
    p = _run(**params)[0]
    batches = p.records_total // p.records_per_batch

    def handler_cpu(overrides: dict) -> float:
        engine = _run(overrides, **params)[2]
        return sum(ns for role, ns in engine.stats.role_cpu_busy_ns.items() if ".handler" in role)

    before = handler_cpu({})
    slower = BASE.host.crc32c_gbps / 2
    expected = batches * p.batch_size * 8.0 * (1 / slower - 1 / BASE.host.crc32c_gbps)
    assert handler_cpu({"host.crc32c_gbps": slower}) - before == pytest.approx(expected, rel=1e-9)
    # memcpy rate: only the 8-byte baseOffset each commit rewrites in place
    copy = batches * 8 * 8.0 * (2 / BASE.host.memcpy_gbps - 1 / BASE.host.memcpy_gbps)
    assert handler_cpu({"host.memcpy_gbps": BASE.host.memcpy_gbps / 2}) - before == pytest.approx(copy, rel=1e-9)


@pytest.mark.parametrize(("system", "threads"), [("kafka", ".io"), ("kafkadirect", ".handler")])
def test_both_brokers_pay_the_append_path(system: str, threads: str) -> None:
    """host.append_ns per batch and host.append_record_ns per record LogValidator iterates: on Kafka's I/O
    threads and on KafkaDirect's commit handler alike; host.request_ns only on the socket path."""
    params = {**ONE_OUTSTANDING, "batch_bytes": 1024, "record_bytes": 100, "system": system}
    p, out, _ = _run(**params)
    batches = -(-p.records_total // p.records_per_batch)
    records = out["producer0"]["records"]  # Kafka's last batch holds what is left; KafkaDirect's is whole

    def cpu(overrides: dict) -> float:
        engine = _run(overrides, **params)[2]
        return sum(ns for role, ns in engine.stats.role_cpu_busy_ns.items() if threads in role)

    before = cpu({})
    assert cpu({"host.append_ns": BASE.host.append_ns + 1000.0}) - before == pytest.approx(batches * 1000.0)
    per_record = cpu({"host.append_record_ns": BASE.host.append_record_ns + 10.0}) - before
    assert per_record == pytest.approx(records * 10.0)
    request = cpu({"host.request_ns": BASE.host.request_ns + 1000.0}) - before
    assert request == pytest.approx(batches * 1000.0 if system == "kafka" else 0.0, abs=1e-6)


# --- what the consumers time --------------------------------------------------------------------

TAILING = {"records_per_producer": 40, "record_bytes": 256, "batch_bytes": 1, "max_in_flight": 1, "consumers": 1,
           "segment_bytes": 1 << 20}  # fmt: skip


def test_kafkadirect_data_read_latency_does_not_depend_on_the_slot_poll_interval() -> None:
    """ConsumerLatency over RDMA times each data READ, post to completion; slot READs are not timed."""
    one_batch = {**TAILING, "system": "kafkadirect", "fetch_bytes": TAILING["record_bytes"] + 72}
    for shape in ({"consume_after_produce": True, "max_in_flight": 5}, {}):  # pre-filled (the tool), and tailing
        out = {us: _run(slot_poll_us=us, **{**one_batch, **shape})[1]["consumer0"] for us in (20.0, 200.0)}
        reads = out[20.0]["fetch_data_latency_ns"]
        assert len(reads) == TAILING["records_per_producer"]  # one READ per one-record batch
        assert out[200.0]["fetch_data_latency_ns"] == pytest.approx(reads, rel=1e-3)
        assert out[20.0]["fetch_empty_latency_ns"] == out[200.0]["fetch_empty_latency_ns"] == []
    e2e = {us: sorted(o["e2e_latency_ns"])[len(o["e2e_latency_ns"]) // 2] for us, o in out.items()}
    assert e2e[200.0] > e2e[20.0] + 50_000  # while a tailing consumer's end-to-end latency does depend on it


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_the_fetch_request_consumer_keeps_fetches_with_and_without_data_apart(system: str) -> None:
    # a tailing consumer whose fetches do not wait (fetch.max.wait.ms 0): some find nothing new
    tail = _run(system=system, fetch_max_wait_ms=0.0, **TAILING)[1]["consumer0"]
    assert tail["fetch_empty_latency_ns"] and tail["fetch_data_latency_ns"]
    assert len(tail["fetch_data_latency_ns"]) + len(tail["fetch_empty_latency_ns"]) == len(tail["fetch_latency_ns"])
    assert min(tail["fetch_empty_latency_ns"]) >= 10_000  # each waited its fetch.max.wait.ms in purgatory
    # ConsumerLatency: a pre-filled topic read from the start, one one-record batch per fetch, no wait
    p, out, _ = _run(system=system, consume_after_produce=True, fetch_max_wait_ms=0.0,
                     fetch_bytes=TAILING["record_bytes"] + 72, **{**TAILING, "max_in_flight": 5})  # fmt: skip
    filled = out["consumer0"]
    assert filled["fetch_empty_latency_ns"] == []
    assert len(filled["fetch_data_latency_ns"]) == len(filled["delivered"]) == p.records_total


@pytest.mark.parametrize("system", ["kafka", "kafkadirect"])
def test_check_crcs_is_the_consumers_crc_pass(system: str) -> None:
    params = {**TAILING, "consume_after_produce": True, "system": system}
    p, _, on = _run(**params)
    off = _run(check_crcs=False, **params)[2]
    saved = on.stats.role_cpu_busy_ns["consumer0"] - off.stats.role_cpu_busy_ns["consumer0"]
    assert saved == pytest.approx(p.records_total * p.batch_size * 8.0 / BASE.host.crc32c_gbps)


# --- EndToEndLatency: one thread, sequential ----------------------------------------------------


@pytest.mark.parametrize("system", SYSTEMS)
def test_end_to_end_is_the_ack_latency_plus_the_catch_up_after_it(system: str) -> None:
    """ack[k] + catch-up[k] is the time from send to the batch handed up, and the next send follows at once."""
    p, out, _ = _run(system=system, sequential_e2e=True, fetch_max_wait_ms=0.0, **TAILING)
    acks, cons = out["producer0"]["ack_latency_ns"], out["consumer0"]
    catchup = cons["catchup_latency_ns"]
    n = p.records_total
    assert len(acks) == len(catchup) == len(cons["delivered"]) == n
    sent = [d[4] for d in cons["delivered"]]  # the batch timestamp: the producer's clock before send()
    # the consumer hands a batch up after its CRC and copy, which follow the response (e2e is timed at the
    # response); KafkaDirect's consumer first takes the bytes out of its cache (ReadMem: a copy in kdsim)
    copies = 2 if system == "kafkadirect" else 1
    handling = p.batch_size * 8.0 * (1 / BASE.host.crc32c_gbps + copies / BASE.host.memcpy_gbps)
    handling += BASE.host.consumer_record_ns  # one record a batch: parsed and deserialised for the application
    for k in range(n):
        delivered_at = sent[k] + cons["e2e_latency_ns"][k] + handling
        assert acks[k] + catchup[k] == pytest.approx(delivered_at - sent[k], abs=1.0)
        if k + 1 < n:  # EndToEndLatency's loop: the next send() right after poll() returned, no hand-off
            assert sent[k + 1] == pytest.approx(delivered_at, abs=1.0)
    assert all(c > 0 for c in catchup)


def test_sequential_end_to_end_puts_the_consumer_on_the_producers_host() -> None:
    roles = {r.name: r for r in build(KafkaParams(system="kafkadirect", sequential_e2e=True, **TAILING))}
    assert roles["consumer0"].host == roles["producer0"].host
    assert roles["consumer0"].args["e2e"] is roles["producer0"].args["e2e"]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"consumers": 0}, "consumers = 0"),
        ({"consumers": 1, "producers": 2, "partitions": 2}, "producers = 2, partitions = 2"),
        ({"consumers": 1, "acks": 0}, "acks = 0"),
        ({"consumers": 1, "consume_after_produce": True}, "consume_after_produce = true"),
    ],
)
def test_sequential_end_to_end_needs_the_tools_shape(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KafkaParams(system="kafka", sequential_e2e=True, **params)


def test_linger_never_delays_a_closed_loop_producer() -> None:
    """Kafka sends a batch when it is full or its linger expires; a closed-loop producer fills every batch at once."""
    from kdlab.engines import make_engine
    from kdlab.kafka.cluster import build
    from kdlab.kafka.params import KafkaParams

    runs = []
    for linger in (0.0, 100.0):
        p = KafkaParams(system="kafka", record_bytes=1024, records_per_producer=400, linger_ms=linger)
        out = make_engine("sim", "cx4-edr-100g").run(build(p))["producer0"]
        runs.append((out["t_last_ns"] - out["t_first_ns"], out["ack_latency_ns"]))
    assert runs[0] == runs[1]
