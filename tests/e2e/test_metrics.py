"""GET /metrics on the admin listener, read with the Prometheus project's own
text-format parser (prometheus_client.parser), after traffic of known shape."""

from prometheus_client.parser import text_string_to_metric_families

from lkstack import MODEL, http, make_key


def scrape(stack) -> dict:
    st, headers, body = http("GET", stack.admin_base + "/metrics")
    assert st == 200
    assert headers.get("content-type", "").startswith("text/plain; version=0.0.4")
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return families


def value(families, family, sample_name, **labels) -> float:
    for s in families[family].samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


def test_metrics_reflect_traffic(stack):
    before = scrape(stack)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "metrics"}]}
    for _ in range(3):
        assert stack.chat_raw(body)[0] == 200
    assert stack.chat_raw(body, api_key=make_key())[0] == 401
    assert stack.chat_raw({**body, "model": "no-such-model"})[0] == 404
    after = scrape(stack)

    # the family names follow the conventions: one prefix, _total counters, _seconds histograms
    for name, kind in (("lumkey_edge_requests", "counter"), ("lumkey_edge_request_seconds", "histogram"),
                       ("lumkey_edge_upstream_seconds", "histogram"),
                       ("lumkey_edge_worker_call_seconds", "histogram"), ("lumkey_edge_worker_up", "gauge")):
        assert name in after and after[name].type == kind, (name, kind)

    def delta(family, sample, **labels):
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    req = "lumkey_edge_requests"
    assert delta(req, req + "_total", endpoint="chat.completions", decision="allow", status="200") == 3
    assert delta(req, req + "_total", endpoint="chat.completions", decision="deny", status="401") == 1
    assert delta(req, req + "_total", endpoint="chat.completions", decision="deny", status="404") == 1
    assert delta("lumkey_edge_request_seconds", "lumkey_edge_request_seconds_count") == 5
    assert delta("lumkey_edge_upstream_seconds", "lumkey_edge_upstream_seconds_count") == 3
    # per hop: every request that got past the key format asked policy; accepted ones asked audit
    calls = "lumkey_edge_worker_call_seconds"
    assert delta(calls, calls + "_count", service="policy") == 5
    assert delta(calls, calls + "_count", service="audit") >= 3
    assert delta(calls, calls + "_count", service="vault") >= 3  # credentials (+ key hashes not cached)
    assert value(after, calls, calls + "_sum", service="policy") > 0
    # the same key three times: the edge reused the vault's hash at least twice
    assert delta("lumkey_edge_keycache_hits", "lumkey_edge_keycache_hits_total") >= 2
    for svc in ("policy", "vault", "approval", "audit"):
        assert value(after, "lumkey_edge_worker_up", "lumkey_edge_worker_up", service=svc) == 1


def test_scaling_and_shutdown_metrics(stack):
    """The families the cluster and shutdown behaviour add, with their types and resting values."""
    m = scrape(stack)
    for name, kind in (("lumkey_edge_requests_in_flight", "gauge"), ("lumkey_edge_held_requests", "gauge"),
                       ("lumkey_edge_worker_call_retries", "counter"), ("lumkey_edge_worker_replicas", "gauge"),
                       ("lumkey_edge_ready", "gauge")):
        assert name in m and m[name].type == kind, (name, kind)
    # one ipc:// replica of each worker on a single host
    for svc in ("policy", "vault", "approval", "audit"):
        assert value(m, "lumkey_edge_worker_replicas", "lumkey_edge_worker_replicas", service=svc) == 1
    assert value(m, "lumkey_edge_held_requests", "lumkey_edge_held_requests") == 0
    assert value(m, "lumkey_edge_ready", "lumkey_edge_ready") == 1
