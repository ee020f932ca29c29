"""Exact timing of the max-min fair network model."""

import math

import pytest
import simpy

from fedsim.message import Message
from fedsim.network import Link, Network

MB = 1_250_000  # bytes: 10 Mbit
LAT = 0.05


def _upload(env, net, name, nbytes, path, log, delay=0.0):
    if delay:
        yield env.timeout(delay)
    msg = Message("update_up", name, "server", 1, bytes(nbytes))
    yield net.send(msg, path)
    log[name] = env.now


def _run(flows):
    env = simpy.Environment()
    net = Network(env)
    log = {}
    for name, nbytes, path, delay in flows:
        env.process(_upload(env, net, name, nbytes, path, log, delay))
    env.run()
    return log


def test_two_clients_share_server_ingress_equally():
    ingress = Link("server:ingress", 10e6)
    a, b = Link("a:up", 100e6, LAT), Link("b:up", 100e6, LAT)
    log = _run([("a", MB, [a, ingress], 0), ("b", MB, [b, ingress], 0)])
    assert log["a"] == pytest.approx(LAT + 2.0, abs=1e-6)
    assert log["b"] == pytest.approx(LAT + 2.0, abs=1e-6)


def test_one_client_alone_gets_full_ingress():
    ingress = Link("server:ingress", 10e6)
    log = _run([("a", MB, [Link("a:up", 100e6, LAT), ingress], 0)])
    assert log["a"] == pytest.approx(LAT + 1.0, abs=1e-6)


def test_slow_access_link_leaves_remainder_to_fast_client():
    ingress = Link("server:ingress", 10e6)
    slow, fast = Link("slow:up", 1e6, LAT), Link("fast:up", 100e6, LAT)
    log = _run([("slow", MB, [slow, ingress], 0), ("fast", MB, [fast, ingress], 0)])
    # fast gets 9 Mbit/s while slow is capped at 1 Mbit/s: 1e7 bits / 9e6 bit/s
    assert log["fast"] == pytest.approx(LAT + 1e7 / 9e6, abs=1e-6)
    # slow: 1 Mbit/s throughout (its own link is its bottleneck) -> 10 s
    assert log["slow"] == pytest.approx(LAT + 10.0, abs=1e-6)


def test_rates_recomputed_when_a_flow_joins():
    ingress = Link("server:ingress", 8e6)  # 1e6 B/s
    a, b = Link("a:up", math.inf), Link("b:up", math.inf)
    # a alone for 0.5 s (0.5e6 B sent), then shares: 0.5e6 B left at 0.5e6 B/s -> ends at 1.5 s;
    # b sent 0.5e6 B by then, then alone: 0.5e6 B at 1e6 B/s -> ends at 2.0 s
    log = _run([("a", 1_000_000, [a, ingress], 0), ("b", 1_000_000, [b, ingress], 0.5)])
    assert log["a"] == pytest.approx(1.5, abs=1e-9)
    assert log["b"] == pytest.approx(2.0, abs=1e-9)


def test_unconstrained_path_costs_only_latency():
    log = _run([("a", MB, [Link("a:up", math.inf, 0.25)], 0)])
    assert log["a"] == pytest.approx(0.25, abs=1e-12)


def test_cancelled_flow_frees_capacity():
    env = simpy.Environment()
    net = Network(env)
    ingress = Link("server:ingress", 8e6)
    ev_a = net.send(Message("update_up", "a", "server", 1, bytes(1_000_000)), [ingress])
    ev_b = net.send(Message("update_up", "b", "server", 1, bytes(1_000_000)), [ingress])

    def canceller():
        yield env.timeout(1.0)  # each has sent 0.5e6 B
        net.cancel(ev_b)

    arrivals = {}
    ev_a.callbacks.append(lambda e: arrivals.setdefault("a", env.now))
    env.process(canceller())
    env.run()
    assert not ev_b.triggered
    assert arrivals["a"] == pytest.approx(1.5, abs=1e-9)


def test_invalid_link_rejected():
    with pytest.raises(ValueError, match="bandwidth_bps must be > 0"):
        Link("x", 0)


def test_cancel_reports_the_bytes_sent_and_frees_the_link():
    env = simpy.Environment()
    net = Network(env)
    link = Link("a:up", 8000, 0.5)  # 1000 B/s
    aborted, log = [], {}
    net.subscribe_aborted(lambda m, p, t0, t1, sent: aborted.append((m.src, t0, t1, sent)))
    first = net.send(Message("update_up", "a", "server", 1, bytes(1000)), [link])
    env.process(_upload(env, net, "b", 1000, [link], log))  # shares the link until the abort

    def abort():
        yield env.timeout(0.5)
        assert net.cancel(first) == 250  # 0.5 s at half the link
    env.process(abort())
    env.run()
    assert aborted == [("a", 0.0, 0.5, 250)]
    assert not first.triggered
    # b: 250 B in the first 0.5 s, then the whole link for its last 750 B, then latency
    assert log["b"] == pytest.approx(0.5 + 0.75 + 0.5)


def test_cancel_after_the_last_byte_left_lets_the_message_arrive():
    env = simpy.Environment()
    net = Network(env)
    arrival = net.send(Message("update_up", "a", "server", 1, bytes(1000)),
                       [Link("a:up", 8000, 0.5)])
    env.run(until=1.2)  # transmitted at 1.0, propagating until 1.5
    assert net.cancel(arrival) is None
    env.run()
    assert arrival.triggered and env.now == pytest.approx(1.5)
