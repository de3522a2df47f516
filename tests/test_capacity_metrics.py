"""Reading workers' load from their Prometheus metrics, per server kind, and the headroom maths (pure)."""

from __future__ import annotations

import pytest

from trafficd.policy.capacity import Capacity, MetricNames
from trafficd.probe.capacity_metrics import MetricsError, parse
from trafficd.stats.capacity import Reading, WorkerFigures, region_capacity, window_rates, worker_figures

VLLM_V1 = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 6.0
vllm:num_requests_running{engine="1",model_name="m"} 4.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 100.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 20.0
"""

VLLM_V0 = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.4
"""

SGLANG = """# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 12.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m"} 1.0
# TYPE sglang:max_running_requests gauge
sglang:max_running_requests{model_name="m"} 48.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m"} 0.3
# TYPE sglang:num_requests_total counter
sglang:num_requests_total{model_name="m"} 500.0
"""

TGI = """# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 5
# TYPE tgi_queue_size gauge
tgi_queue_size 0
# TYPE tgi_request_success counter
tgi_request_success 77
"""


def test_vllm_v1_sums_engines_and_finish_reasons() -> None:
    """vLLM: running and waiting summed over engines, completed over finish reasons, KV usage the fullest engine's."""
    load = parse(VLLM_V1, Capacity(max_concurrency=64))
    assert (load.running, load.waiting, load.kv_usage, load.completed_total) == (10.0, 2.0, 0.5, 120.0)
    assert load.limit == 64.0  # vLLM does not publish max_num_seqs: the policy's max_concurrency


def test_vllm_v0_kv_gauge_name_is_accepted() -> None:
    """Older vLLM's vllm:gpu_cache_usage_perc is read as the KV usage; without a counter nothing is completed."""
    load = parse(VLLM_V0, Capacity())
    assert (load.running, load.kv_usage, load.completed_total, load.limit) == (3.0, 0.4, None, None)


def test_sglang_publishes_its_own_limit() -> None:
    """SGLang: the limit comes from sglang:max_running_requests, KV from sglang:token_usage."""
    load = parse(SGLANG, Capacity(server="sglang", max_concurrency=8))
    assert (load.running, load.waiting, load.limit, load.kv_usage, load.completed_total) == (
        12.0,
        1.0,
        48.0,
        0.3,
        500.0,
    )


def test_tgi_reads_batch_size_queue_and_successes() -> None:
    """TGI: tgi_batch_current_size running, tgi_queue_size waiting, tgi_request_success completed, no KV usage."""
    load = parse(TGI, Capacity(server="tgi", max_concurrency=32))
    assert (load.running, load.waiting, load.limit, load.kv_usage, load.completed_total) == (5.0, 0.0, 32.0, None, 77.0)


def test_generic_mapping_names_each_figure() -> None:
    """A generic server is read through the policy's metric names."""
    text = "inflight 7\nqueue 3\nslots 20\ndone_total 9\n"
    names = MetricNames(running="inflight", waiting="queue", limit="slots", completed="done_total")
    load = parse(text, Capacity(server="generic", metrics=names))
    assert (load.running, load.waiting, load.limit, load.completed_total) == (7.0, 3.0, 20.0, 9.0)


def test_missing_running_gauge_and_garbage_are_errors() -> None:
    """A page without the running gauge (wrong server kind) or that is not Prometheus text is a MetricsError."""
    with pytest.raises(MetricsError, match="no sglang:num_running_reqs"):
        parse(VLLM_V1, Capacity(server="sglang"))
    with pytest.raises(MetricsError):
        parse("<html>{not: metrics}</html>", Capacity())


def test_rate_window_survives_a_reset() -> None:
    """The completed rate is the counter's increase per second over the window, with the mean running beside it;
    a counter that went down was reset and the window restarts there."""
    steady = [Reading(10.0, 100.0, 4.0), Reading(15.0, 150.0, 4.0), Reading(20.0, 200.0, 4.0)]
    assert window_rates(steady) == (10.0, 4.0, 0.0)
    reset = [Reading(10.0, 100.0, 4.0), Reading(15.0, 5.0, 6.0), Reading(20.0, 25.0, 8.0)]
    assert window_rates(reset) == (4.0, 7.0, 0.4)
    assert window_rates(steady[:1]) == (None, None, 0.0)


def test_a_worker_falling_behind_counts_its_arrivals() -> None:
    """A slow worker completing 2 req/s while its queue grows by 6 req/s carries a load of 8 req/s (arrivals)."""
    slow = [Reading(0.0, 0.0, 10.0, 0.0), Reading(5.0, 10.0, 20.0, 20.0)]
    rate, mean_running, growth = window_rates(slow)
    assert (rate, growth) == (2.0, 6.0)
    f = worker_figures(20.0, 20.0, 40.0, None, rate, Capacity(), at=5.0, mean_running=mean_running, backlog_rps=growth)
    assert f.load_rps == 8.0 and f.headroom_rps == 0.0


def test_headroom_is_spare_slots_times_little_rate() -> None:
    """20 running completing 10 req/s (μ = 0.5/s each), limit 40 at 80%: (32 − 20 − 2) × 0.5 = 5 req/s."""
    f = worker_figures(20.0, 2.0, 40.0, None, 10.0, Capacity(), at=1.0)
    assert (f.load_rps, f.per_slot_rps, f.headroom_rps) == (10.0, 0.5, 5.0)


def test_kv_cache_near_full_takes_less() -> None:
    """The same worker at 85% KV usage (target 90%) can hold only 20 × 0.9/0.85 requests: far less headroom."""
    f = worker_figures(20.0, 0.0, 40.0, 0.85, 10.0, Capacity(), at=1.0)
    assert f.headroom_rps is not None and f.headroom_rps == pytest.approx((20 * 0.9 / 0.85 - 20) * 0.5)
    full = worker_figures(20.0, 0.0, 40.0, 0.95, 10.0, Capacity(), at=1.0)
    assert full.headroom_rps == 0.0


def test_idle_worker_uses_the_assumed_request_time() -> None:
    """A worker running nothing has headroom target × limit ÷ capacity.request_time."""
    f = worker_figures(0.0, 0.0, 10.0, None, 0.0, Capacity.model_validate({"request_time": "2s"}, strict=False), at=1.0)
    assert (f.load_rps, f.headroom_rps) == (0.0, 4.0)


def test_region_is_stale_when_any_worker_is() -> None:
    """A region's figures are live sums while every worker is fresh; one stale worker makes it stale."""
    a = worker_figures(4.0, 0.0, 10.0, None, 2.0, Capacity(), at=100.0)
    b = worker_figures(2.0, 0.0, 10.0, None, 1.0, Capacity(), at=90.0)
    live = region_capacity({"a": a, "b": b}, now=105.0, max_age_s=30.0)
    assert (live.source, live.load_rps, live.age_s) == ("live", 3.0, 15.0)
    assert live.headroom_rps == pytest.approx(a.headroom_rps + b.headroom_rps)  # type: ignore[operator]
    stale = region_capacity({"a": a, "b": b}, now=125.0, max_age_s=30.0)
    assert (stale.source, stale.load_rps, stale.stale_workers) == ("stale", None, ("b",))
    assert region_capacity({}, 0.0, 30.0).source == "missing"


def test_figures_round_trip_through_json() -> None:
    """What the agent stores is what the reader gets back; anything else is ignored."""
    f = worker_figures(4.0, 1.0, 10.0, 0.5, 2.0, Capacity(), at=100.0)
    assert WorkerFigures.from_json(f.to_json()) == f
    assert WorkerFigures.from_json(b"{}") is None and WorkerFigures.from_json("nope") is None


def test_prometheus_answer_as_load() -> None:
    """A load query's answer: a scalar, or an instant vector summed; errors, matrices and no sample are refused."""
    from trafficd.probe.load_query import LoadQueryError, load_from_answer, query_text

    samples = '[{"metric":{"a":"1"},"value":[1,"30.5"]},{"metric":{"a":"2"},"value":[1,"12"]}]'
    vector = '{"status":"success","data":{"resultType":"vector","result":' + samples + "}}"
    assert load_from_answer(vector) == 42.5
    assert load_from_answer('{"status":"success","data":{"resultType":"scalar","result":[1,"7"]}}') == 7.0
    refused = [
        '{"status":"error","error":"parse error at char 5"}',
        '{"status":"success","data":{"resultType":"vector","result":[]}}',
        '{"status":"success","data":{"resultType":"matrix","result":[{"values":[[1,"2"]]}]}}',
        '{"status":"success","data":{"resultType":"scalar","result":[1,"-3"]}}',
        '{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}',
        "<html>",
    ]
    for body in refused:
        with pytest.raises(LoadQueryError):
            load_from_answer(body)
    assert query_text('sum(rate(x{region="{region}"}[1m]))', "eu-west") == 'sum(rate(x{region="eu-west"}[1m]))'
